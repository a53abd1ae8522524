import pytest

from flowsteer.sites import KINDS, FeatureId, Site, SiteError


@pytest.mark.parametrize(
    ("text", "hook"),
    [
        ("12/res", "blocks.12.hook_resid_post"),
        ("3/mlp", "blocks.3.hook_mlp_out"),
        ("0/att", "blocks.0.hook_attn_out"),
        ("5/pre", "blocks.5.hook_resid_pre"),
        ("5/mid", "blocks.5.hook_resid_mid"),
        ("7/resid_post", "blocks.7.hook_resid_post"),
    ],
)
def test_site_text_and_hook_names_round_trip(text, hook):
    site = Site.parse(text)
    assert site.hook_name == hook
    assert Site.from_hook_name(hook) == site
    assert Site.parse(str(site)) == site
    assert Site.parse(hook) == site


def test_feature_notation_round_trips():
    feature = FeatureId.parse("24/res/14548")
    assert feature == FeatureId(Site(24, "resid_post"), 14548)
    assert str(feature) == "24/res/14548"
    assert str(FeatureId.parse("7/mlp_out/6110")) == "7/mlp/6110"


def test_sites_sort_in_forward_order():
    sites = [Site(2, "resid_pre"), Site(1, "resid_post"), Site(1, "mlp_out"), Site(1, "attn_out")]
    assert [str(s) for s in sorted(sites)] == ["1/att", "1/mlp", "1/res", "2/pre"]
    assert Site.all(2, ("resid_post", "mlp_out")) == [Site(0, "mlp_out"), Site(0), Site(1, "mlp_out"), Site(1)]


@pytest.mark.parametrize("bad", ["12/foo", "res/12", "12", "blocks.3.hook_q", "-1/res", "a/b/c/d"])
def test_unreadable_sites_name_the_valid_forms(bad):
    with pytest.raises(SiteError) as error:
        Site.parse(bad)
    assert "res" in str(error.value) or "LAYER/KIND" in str(error.value) or "hook_" in str(error.value)


def test_unknown_kind_lists_valid_kinds():
    with pytest.raises(SiteError, match="valid kinds: pre"):
        Site(3, "residual")


def test_validation_names_the_valid_range():
    with pytest.raises(SiteError, match=r"valid layers are 0\.\.29"):
        Site(30).validate(30)
    with pytest.raises(SiteError, match=r"valid indices are 0\.\.2303"):
        FeatureId(Site(3), 2304).validate(30, 2304)
    with pytest.raises(SiteError):
        FeatureId(Site(3), -1)
    assert FeatureId(Site(29), 2303).validate(30, 2304).index == 2303


def test_kinds_are_the_five_documented_ones():
    assert set(KINDS) == {"resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out"}
