"""Theme steering under the comparison protocol, on the tiny random model: disjoint splits, equal budgets, ActAdd at
the feature's ‖Δh‖, a baseline row, selection on val and one report on test."""

from __future__ import annotations

import pytest
import torch

from flowsteer.evals import words
from flowsteer.sites import FeatureId, Site
from flowsteer.steering import FeatureSteerer, load_themes
from flowsteer.steering.contrast import mean_token_activation, text_mean_difference
from flowsteer.steering.evaluate import SteeringScorer
from flowsteer.steering.magnitude import added_norm, matched_actadd, measured_norm
from flowsteer.steering.protocol import (
    CONTENDERS,
    SteeringSettings,
    compare_theme,
    contender_patches,
    markdown_table,
    prepare_theme,
    theme_classifier,
)
from flowsteer.steering.splits import SteeringSplits, load_prompts, split_texts, steering_splits
from tests.test_feature_patching import orthonormal_jumprelu
from tests.test_steering import PROMPTS, small_graph


@pytest.fixture(scope="module")
def bank():
    return {Site(layer, kind): orthonormal_jumprelu(seed=3 * layer + i)
            for layer in range(4) for i, kind in enumerate(("resid_post", "mlp_out", "attn_out"))}


@pytest.fixture(scope="module")
def splits():
    return steering_splits(load_themes(), load_prompts(), n_val=2, n_test=2, seed=0)


def test_theme_texts_and_prompts_are_split_disjointly(splits):
    themes = load_themes()
    for name, texts in themes.items():
        rank, score = set(splits.rank[name]), set(splits.score[name])
        assert rank and score and not rank & score and rank | score == set(texts)
    assert not set(splits.val) & set(splits.test)
    assert steering_splits(themes, load_prompts(), n_val=2, n_test=2, seed=0) == splits  # reproducible
    assert split_texts(themes, seed=1)[0] != splits.rank  # another seed, another split
    with pytest.raises(ValueError, match="both in the rank and the score part"):
        SteeringSplits({"a": ["x", "y"]}, {"a": ["y", "z"]}, ["p"], ["q"])
    with pytest.raises(ValueError, match="both val and test"):
        SteeringSplits({"a": ["x"]}, {"a": ["z"]}, ["p"], ["p", "q"])
    with pytest.raises(ValueError, match="listed twice|cannot take"):
        steering_splits(themes, ["p", "q"], n_val=2, n_test=1)


def test_the_classifier_never_sees_the_rank_texts(splits):
    classifier = theme_classifier(splits)
    score_words = {w for texts in splits.score.values() for t in texts for w in words(t)}
    rank_only = {w for texts in splits.rank.values() for t in texts for w in words(t)} - score_words
    assert rank_only and set(classifier.vocab) <= score_words and not set(classifier.vocab) & rank_only


def test_every_contender_gets_the_same_budget():
    settings = SteeringSettings()
    assert settings.budget == 4 and all(len(settings.grid(name)) == 4 for name in CONTENDERS)
    with pytest.raises(ValueError, match="same number of settings, got \\[2, 3\\]"):
        SteeringSettings(feature_strengths=(1.0, 2.0), graph_strengths=(0.5, 1.0, 2.0), prompt_templates=("{prompt}",)
                         * 2)


def test_actadd_is_matched_to_the_feature_norm(tiny, bank):
    feature = FeatureId(Site(1, "resid_post"), 3)
    vector = text_mean_difference(tiny, ["The cat sat on the mat."], ["Rivers run to the sea."], feature.site)
    assert vector.shape == (tiny.cfg.d_model,) and vector.norm() > 0
    assert torch.allclose(mean_token_activation(tiny, ["The cat sat on the mat."] * 2, "1/res"),
                          mean_token_activation(tiny, ["The cat sat on the mat."], "1/res"), atol=1e-5)
    for s in (2.0, 8.0):
        steer = FeatureSteerer(bank, [feature], "add", s).patches()
        target = added_norm(steer)
        actadd = matched_actadd(vector, feature.site, target)
        assert measured_norm(tiny, PROMPTS, actadd) == pytest.approx(target, rel=1e-4)
        assert measured_norm(tiny, PROMPTS, steer) == pytest.approx(target, rel=1e-4)
        direction = actadd[0].intervention.vector / actadd[0].intervention.vector.norm()
        assert torch.allclose(direction, vector / vector.norm(), atol=1e-6)  # the vector's direction, rescaled
    assert measured_norm(tiny, PROMPTS, []) == 0.0
    with pytest.raises(ValueError, match="zero"):
        matched_actadd(torch.zeros(tiny.cfg.d_model), feature.site, 1.0)


@pytest.fixture(scope="module")
def steering(tiny, bank, splits):
    return prepare_theme(tiny, bank, splits, "wedding", candidates=5, graph=lambda feature: small_graph())


def test_prepare_theme_uses_the_rank_texts(tiny, bank, splits, steering):
    assert steering.seed.site.kind == "resid_post" and str(steering.seed) in steering.ranked
    off = [t for name, texts in sorted(splits.rank.items()) if name != "wedding" for t in texts]
    expected = text_mean_difference(tiny, splits.rank["wedding"], off, steering.seed.site)
    assert torch.allclose(steering.vector, expected)
    patches = {name: contender_patches(name, {"s": 2.0, "template": 0}, steering, bank, None) for name in CONTENDERS}
    assert patches["prompt"] == [] and len(patches["graph"]) == len(small_graph())
    assert added_norm(patches["actadd"]) == pytest.approx(added_norm(patches["initial_feature"]), rel=1e-5)


def test_compare_theme_selects_on_val_and_reports_once_on_test(tiny, bank, splits, steering):
    settings = SteeringSettings(feature_strengths=(1.0, 30.0), graph_strengths=(0.5, 4.0),
                                prompt_templates=("About {theme}: {prompt}", "{theme}. {prompt}"),
                                samples_val=2, samples_test=3, max_new_tokens=4)
    scorer = SteeringScorer(tiny, theme_classifier(splits))
    result = compare_theme(tiny, bank, splits, steering, scorer, settings=settings, seeds=(5, 6))
    rows = {row["method"]: row for row in result["comparison"]["rows"]}
    assert list(rows) == ["baseline", *CONTENDERS]
    assert result["comparison"]["protocol"]["seeds"] == [5, 6]
    for name in CONTENDERS:
        assert rows[name]["settings_tried"] == 2 and len(rows[name]["selection"]) == 2
        chosen = rows[name]["estimates"]["activation_score"]
        assert chosen["n"] == len(splits.test) * 3  # the test prompts x samples, once
        runs = result["delta_norm_per_token"][name]
        assert [r["split"] for r in runs] == ["val", "val", "test"]
        assert runs[2]["setting"] == rows[name]["setting"]
    assert rows["baseline"]["estimates"]["behaviour"]["n"] == len(splits.test) * 3
    norms = result["delta_norm_per_token"]
    for feature_run, actadd_run in zip(norms["initial_feature"][:2], norms["actadd"][:2], strict=True):
        assert actadd_run["value"] == pytest.approx(feature_run["value"], rel=1e-4)  # matched at every setting
    assert all(r["value"] == 0.0 for r in norms["prompt"] + norms["baseline"])
    assert {p["verdict"] for p in result["pairwise"]} <= {"no difference", "higher", "lower"}
    assert len(result["pairwise"]) == 10
    table = markdown_table(result)
    assert "| baseline | 1 |" in table and "settings tried" in table and "Σ‖Δh‖" in table
