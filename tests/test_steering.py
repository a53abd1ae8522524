"""Feature steering on the tiny model: modes, units, multi-layer graphs, theme ranking, scoring."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from flowsteer.evals import ThemeClassifier, repetition
from flowsteer.flow.graph import FlowGraph
from flowsteer.patching import ClampFeatures, cache_sites, run_with_patches
from flowsteer.sites import FeatureId, Site
from flowsteer.steering import (
    Constant,
    Exponential,
    FeatureSteerer,
    Linear,
    coherence,
    graph_features,
    graph_steerer,
    load_themes,
    rank_theme_features,
    rank_themes,
    standardised_mean_difference,
)
from tests.test_feature_patching import orthonormal_jumprelu

PROMPTS = ["The cat sat on the mat.", "Rivers run to the sea and back again."]


@pytest.fixture(scope="module")
def bank():
    return {
        Site(layer, kind): orthonormal_jumprelu(seed=3 * layer + i)
        for layer in range(4)
        for i, kind in enumerate(("resid_post", "mlp_out", "attn_out"))
    }


def active_feature(tiny, sae, site) -> int:
    acts = sae.encode(cache_sites(tiny, PROMPTS, [site])[site])
    return int((acts > 0).float().mean((0, 1)).argmax())


def test_rescale_one_is_the_identity_and_zero_removes_the_feature(tiny, bank):
    site = Site(1, "resid_post")
    sae = bank[site]
    feature = FeatureId(site, active_feature(tiny, sae, site))
    clean = run_with_patches(tiny, PROMPTS)
    same = FeatureSteerer(bank, [feature], "rescale", 1.0)
    assert torch.equal(run_with_patches(tiny, PROMPTS, same.patches()), clean)
    removed = FeatureSteerer(bank, [feature], "rescale", 0.0).patches()
    _, acts = run_with_patches(tiny, PROMPTS, removed, cache=[site])
    before = sae.encode(cache_sites(tiny, PROMPTS, [site])[site])[..., feature.index]
    after = sae.encode(acts[site])[..., feature.index]
    assert before.max() > 0.1 and after.abs().max() < 1e-5
    flipped = FeatureSteerer(bank, [feature], "rescale", -1.0).patches()
    h = run_with_patches(tiny, PROMPTS, flipped, cache=[site])[1][site]
    clean_h = cache_sites(tiny, PROMPTS, [site])[site]
    expected = clean_h - 2 * before[..., None] * sae.W_dec[feature.index]
    assert torch.allclose(h, expected, atol=1e-5)  # the error term (everything else) is kept


def test_add_uses_feature_units_and_fuses_one_patch_per_site(tiny, bank):
    site = Site(2, "mlp_out")
    sae = bank[site]
    steerer = FeatureSteerer(bank, ["2/mlp/3", "2/mlp/7", "0/res/1"], "add", [2.0, -1.0, 0.5])
    patches = steerer.patches()
    assert [str(p.site) for p in patches] == ["0/res", "2/mlp"]  # forward order, one per site
    theta = sae.threshold.detach()
    expected = 2.0 * theta[3] * sae.W_dec[3] - 1.0 * theta[7] * sae.W_dec[7]
    assert torch.allclose(patches[1].intervention.vector, expected, atol=1e-6)
    units = {s: torch.full((32,), 2.0) for s in bank}
    measured = FeatureSteerer(bank, ["2/mlp/3"], "add", 1.5, units=units).patches()[0]
    assert torch.allclose(measured.intervention.vector, 3.0 * sae.W_dec[3], atol=1e-6)
    clean = cache_sites(tiny, PROMPTS, [site])[site]
    _, acts = run_with_patches(tiny, PROMPTS, patches[1:], cache=[site])  # 0/res would change 2/mlp too
    assert torch.allclose(acts[site] - clean, expected.expand_as(clean), atol=1e-5)


def test_clamp_sets_the_activation(tiny, bank):
    site = Site(3, "resid_post")
    sae = bank[site]
    steerer = FeatureSteerer(bank, ["3/res/4", "3/res/9"], "clamp", [5.0, 0.0])
    assert isinstance(steerer.patches()[0].intervention, ClampFeatures)
    _, acts = run_with_patches(tiny, PROMPTS, steerer.patches(), cache=[site])
    clean = cache_sites(tiny, PROMPTS, [site])[site]
    a = sae.encode(clean)
    target = torch.stack([5.0 * sae.threshold[4] - a[..., 4], -a[..., 9]], -1)
    assert torch.allclose(acts[site] - clean, target @ sae.W_dec[[4, 9]], atol=1e-5)
    feats = sae.encode(acts[site])
    was_active = a[..., 4] > 0  # where the pre-activation was not below zero, the clamp is exact
    assert was_active.any() and torch.allclose(feats[..., 4][was_active], 5.0 * sae.threshold[4], atol=1e-4)
    assert feats[..., 9].abs().max() < 1e-5


def test_steerer_rejects_bad_input(bank):
    with pytest.raises(ValueError, match="mode="):
        FeatureSteerer(bank, ["1/res/1"], "boost")
    with pytest.raises(KeyError, match="no SAE at 9/res"):
        FeatureSteerer(bank, ["9/res/1"])
    with pytest.raises(IndexError, match="below the SAE width 32"):
        FeatureSteerer(bank, ["1/res/99"])
    with pytest.raises(ValueError, match="2 strengths for 1 features"):
        FeatureSteerer(bank, ["1/res/1"], strength=[1.0, 2.0])
    topk = {Site(1): __import__("tests.flow_synthetic", fromlist=["persistent_bank"]).persistent_bank()[Site(1)]}
    with pytest.raises(ValueError, match="typical_activations"):
        FeatureSteerer(topk, ["1/res/1"], "add", 4.0).patches()


def small_graph() -> FlowGraph:
    graph = nx.DiGraph(seed="2/res/5")
    for name, layer, kind in (
        ("0/res/1", 0, "res"),
        ("1/res/2", 1, "res"),
        ("1/mlp/6", 1, "mlp"),
        ("2/res/5", 2, "res"),
        ("3/res/8", 3, "res"),
    ):
        feature = FeatureId.parse(name)
        graph.add_node(name, site=str(feature.site), kind=kind, index=feature.index, layer=layer, seed=False)
    return FlowGraph(graph)


def test_schedules_and_strategies(bank, tiny):
    span = (0, 3)
    assert Constant()(4.0, 2, span) == 4.0
    assert Linear(end=1.0)(4.0, 0, span) == 4.0 and Linear(end=1.0)(4.0, 3, span) == pytest.approx(1.0)
    assert Exponential(-0.25)(3.0, 2, span) == pytest.approx(3.0 * math.exp(-0.5))
    graph = small_graph()
    assert [str(f) for f, _ in graph_features(graph, 1, "single")] == ["1/mlp/6", "1/res/2"]
    assert len(graph_features(graph, 2, "cumulative")) == 4
    steerer = graph_steerer(graph, bank, 3, 4.0, strategy="cumulative", schedule=Linear(1.0))
    assert dict(zip(map(str, steerer.features), steerer.strengths, strict=True)) == pytest.approx(
        {"0/res/1": 4.0, "1/mlp/6": 3.0, "1/res/2": 3.0, "2/res/5": 2.0, "3/res/8": 1.0}
    )
    deactivate = graph_steerer(graph, bank, 2, -2.0, strategy="single", mode="rescale")
    assert deactivate.strengths == [-2.0]
    with pytest.raises(ValueError, match="no single features at layer 7"):
        graph_features(graph, 7, "single")


def test_theme_ranking_finds_a_planted_feature(tiny, bank):
    on, off = ["aaaa aaaa aaaa", "aaa aaa aa"], ["zzzz zzzz", "zz zzz zzz"]
    smd = standardised_mean_difference(torch.tensor([[1.0, 0.0], [1.2, 0.1]]), torch.tensor([[0.0, 0.0], [0.1, 0.1]]))
    assert smd[0] > 5 and smd[1] < 1
    ranked = rank_theme_features(tiny, {Site(1): bank[Site(1)]}, on, off, theme="a", top=3, min_active=0.0)
    assert len(ranked) == 3 and ranked[0].smd >= ranked[1].smd >= ranked[2].smd
    assert ranked[0].mean_on > ranked[0].mean_off and "⟦" in ranked[0].context
    assert "<table>" in ranked._repr_html_() and str(ranked[0].feature) in ranked.markdown()
    together = rank_themes(tiny, {Site(1): bank[Site(1)]}, {"a": on, "neutral": off}, top=3, min_active=0.0)
    assert list(together) == ["a"] and together["a"].ids() == ranked.ids()


def test_classifier_separates_themes_and_coherence_punishes_repetition():
    themes = load_themes()
    assert {"neutral", "religion", "wedding", "programming"} <= set(themes)
    train = {c: texts[:-4] for c, texts in themes.items()}
    held = {c: texts[-4:] for c, texts in themes.items()}
    classifier = ThemeClassifier().fit(train)
    on = classifier.probability(held["wedding"], "wedding")
    off = classifier.probability([t for c in ("neutral", "religion", "programming") for t in held[c]], "wedding")
    assert on.mean() > 0.5 > off.mean() and on.min() > off.max() - 0.2
    good = "The bride and groom danced at their wedding reception with all their guests."
    loop = "wedding wedding wedding wedding wedding wedding wedding wedding wedding wedding"
    assert repetition(good) == 0 and repetition(loop) > 0.8
    ppl = torch.tensor([12.0, 2.0])  # the loop is very predictable once it starts
    c = coherence(ppl, [good, loop], reference=12.0)
    b = classifier.probability([good, loop], "wedding")
    assert (b * c)[0] > 0.3 and (b * c)[1] < 0.2 * (b * c)[0]
    assert coherence(torch.tensor([5.0]), ["ok"], 10.0)[0] == 0  # a single word is no text


def test_steer_command_on_a_feature_and_a_graph(tmp_path, capsys, bank):
    from flowsteer.cli import main
    from flowsteer.models.tiny import TINY_MODEL

    for site, sae in bank.items():
        sae.cfg.metadata.hook_name = site.hook_name
        sae.save_model(tmp_path / "bank" / f"{site.layer}-{site.short}")
    small_graph().save(tmp_path / "graph.json")
    common = ["--saes", str(tmp_path / "bank"), "--model", TINY_MODEL, "--device", "cpu", "--max-new-tokens", "6"]
    # 400 x the threshold 0.05: a shift of norm 20, enough to change the tiny model's text (8 did not)
    feature = ["steer", "--feature", "1/res/3", "--strength", "400", "--prompt", "I think", "--raw", *common]
    assert main(feature) == 0
    alone = capsys.readouterr().out
    assert main([*feature, "--compare"]) == 0
    header, rest = capsys.readouterr().out.split("--- unsteered ---\n")
    unsteered, steered = rest.split("--- steered ---\n")
    assert "mode='add', features=1" in header and alone == header + steered
    assert unsteered.count("I think") == steered.count("I think") == 1 and steered != unsteered
    assert (
        main(
            [
                "steer",
                "--graph",
                str(tmp_path / "graph.json"),
                "--schedule",
                "linear",
                "--strength",
                "2",
                "--prompt",
                "I think",
                *common,
            ]
        )
        == 0
    )
    assert "features=5, sites=5" in capsys.readouterr().out
    assert main(["steer", "--feature", "7/res/1", "--prompt", "x", *common]) == 2
    assert "no SAE at 7/res" in capsys.readouterr().err


def test_compare_steering_shows_before_and_after(tiny, bank):
    from flowsteer.steering import compare_steering

    result = compare_steering(tiny, bank, "1/res/3", "I think", strength=30.0, n=2, max_new_tokens=5)
    assert len(result.before) == len(result.after) == 2 and result.before != result.after
    assert "<table>" in result._repr_html_() and "| unsteered | steered |" in result.markdown()
    graph = compare_steering(tiny, bank, small_graph(), "I think", layer=2, n=1, max_new_tokens=3)
    assert len(graph.steerer) == 4 and "exponential" not in graph.markdown()
