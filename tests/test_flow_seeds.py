"""Automatic seed choice (`flowsteer.flow.pick_seed`) on synthetic banks."""

from __future__ import annotations

import torch

from flowsteer.flow import pick_seed
from flowsteer.flow.classes import FixedThresholds
from flowsteer.flow.labels import promoted_tokens
from flowsteer.flow.seeds import chain_steps, readability
from flowsteer.flow.tokens import read_texts
from flowsteer.sites import FeatureId, Site
from tests.flow_synthetic import persistent_bank, planted_chain_bank

TEXTS = [
    "The cat sat on the mat and looked at the bird.",
    "Rivers flow into the sea, carrying sand and stones.",
]


def test_chain_steps_follow_the_planted_chain_in_both_directions():
    bank, _ = planted_chain_bank()
    backward, forward = chain_steps(bank, res_threshold=0.9)
    assert backward[Site(3, "resid_post")][5] == 1  # 3/res/5 <- 2/res/7 (cos 0.958)
    assert backward[Site(2, "resid_post")][7] == 0  # 2/res/7 <- 1/res/9 is cut (cos 0.275)
    assert forward[Site(2, "resid_post")][7] == 1 and forward[Site(3, "resid_post")][5] == 0
    assert int(backward[Site(0, "resid_post")].sum()) == 0  # nothing before the first residual SAE


def test_pick_seed_prefers_the_chain_with_a_module_match_and_builds_its_graph(tmp_path):
    bank, _ = planted_chain_bank()
    choice = pick_seed(bank, thresholds=FixedThresholds(res=0.9), candidates=5)
    assert choice.seed == FeatureId(Site(3, "resid_post"), 5)
    assert {"2/res/7", "3/mlp/11"} <= set(choice.flow.graph) and choice.labels is None
    assert choice.candidates[0]["seed"] == "3/res/5" and choice.candidates[0]["modules_above_chance"] == 1
    scores = [entry["score"] for entry in choice.candidates]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    (png,) = choice.save(tmp_path / "seed.png")
    assert png.stat().st_size > 0


def test_pick_seed_with_a_model_labels_only_the_candidates_graphs(tiny):
    bank = persistent_bank()
    choice = pick_seed(bank, tiny, TEXTS, candidates=3)
    seed = choice.flow.graph.nodes[str(choice.seed)]
    assert seed["seed"] and seed["label"] and "active" in choice.candidates[0]
    best = choice.candidates[0]  # the tiny model's byte tokens are never words: readability 0 (tested below)
    assert best["score"] == best["residual_nodes"] + best["modules_above_chance"] + best["readability"]
    assert choice.seconds["labels"] > 0
    promoted = choice.labels.sites[Site(1, "resid_post")].promoted[:, 0]
    unlabelled = (promoted < 0).nonzero().flatten().tolist()
    assert 0 < len(unlabelled) < 128  # promoted tokens computed for the candidates' graph nodes only
    assert choice.labels.promoted_tokens(FeatureId(Site(1, "resid_post"), unlabelled[0])) == []


def test_promoted_tokens_of_some_rows_equal_those_of_all_rows(tiny):
    sae = persistent_bank()[Site(2, "resid_post")]
    ids, values = promoted_tokens(tiny, sae, 4)
    some_ids, some_values = promoted_tokens(tiny, sae, 4, rows=[3, 1])
    assert torch.equal(some_ids[[1, 3]], ids[[1, 3]]) and torch.allclose(some_values[[1, 3]], values[[1, 3]])
    assert bool((some_ids[0] == -1).all()) and bool(some_values[0].isnan().all())


def test_builtin_corpus_texts_by_split_and_source():
    bible = read_texts("data:eval:bible")
    assert bible and all(isinstance(t, str) and t for t in bible)
    assert len(read_texts("data:eval:bible+fortunes")) > len(bible) > 0


def test_readability_is_the_share_of_promoted_tokens_that_are_words():
    class Labels:
        def promoted_tokens(self, feature, n):
            return [" the", "ab", "word", "\n", "cat!", " Dog", "x", "hello", "later"][:n]

    assert readability(Labels(), FeatureId(Site(1), 0)) == 4 / 8  # the, word, Dog, hello; not ab, cat!, x
    assert readability(Labels(), FeatureId(Site(1), 0), n=2) == 1 / 2
