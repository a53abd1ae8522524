"""Deactivation on equal terms: the greedy and exhaustive searches, one shared target set, intervals over texts."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from flowsteer.evals.intervals import rate, ratio_of_sums
from flowsteer.flow.deactivation import Record, _run_rows, deactivation_records, target_evaluator
from flowsteer.flow.deactivation_summary import summarize
from flowsteer.flow.scores import add_permutations, layer_scores
from flowsteer.flow.subsets import exhaustive_search, greedy_search, subset_count
from flowsteer.patching import cache_sites
from flowsteer.sites import Site
from tests.flow_synthetic import persistent_bank, unit

TEXTS = [
    "The cat sat on the mat and looked at the bird.",
    "Rivers flow into the sea, carrying sand and stones.",
    "Physics is the study of matter, energy and forces.",
]
A, B = Site(0, "resid_post"), Site(0, "mlp_out")


def oracle(edits):
    """z = relu(1 - 0.6 [A1] - 0.6 [A2] - 0.3 [A3] - 0.2 [B4]): only A1 and A2 together switch it off."""
    weights = {(A, 1): 0.6, (A, 2): 0.6, (A, 3): 0.3, (B, 4): 0.2}
    return torch.tensor(
        [max(0.0, 1 - sum(w for (s, f), w in weights.items() if f in e.get(s, []))) for e in edits]
    )


def test_exhaustive_finds_the_pair_that_greedy_misses():
    pool = [(A, 1), (A, 2), (A, 3), (B, 4)]
    greedy = greedy_search({A: [1, 2, 3], B: [4]}, oracle, 1.0)
    assert greedy.edit == {A: [1], B: [4]} and greedy.z_new == pytest.approx(0.2)  # one per site: misses A1 + A2
    pair = exhaustive_search(pool, oracle, 1.0, max_size=2)
    assert pair.edit == {A: [1, 2]} and pair.z_new == 0.0 and pair.tried == subset_count(4, 2) == 10
    assert exhaustive_search(pool, oracle, 1.0, max_size=1).z_new == pytest.approx(0.4)  # singles only: no
    assert exhaustive_search(pool, oracle, 1.0, max_size=4).edit == {A: [1, 2]}  # ties go to the smallest subset
    assert exhaustive_search([], oracle, 1.0, max_size=3).edit == {}


def test_ratio_of_sums_widens_with_clustered_samples():
    flat = [True] * 30 + [False] * 30
    clustered = ratio_of_sums([10, 0, 10, 0, 10, 0], [10] * 6)  # six texts of ten identical targets
    assert clustered.value == rate(flat).value == 0.5
    assert clustered.high - clustered.low > 1.5 * (rate(flat).high - rate(flat).low)
    spread = ratio_of_sums([5] * 6, [10] * 6)  # every text at 50%: no spread between clusters
    assert spread.low == spread.high == 0.5


def record(strategy, text, feature, edited, z_new, z_old=2.0):
    return Record("3/res", feature, text, 1, "From RES", strategy, edited, 0.0, z_old, z_new)


def test_every_strategy_is_summarized_on_the_same_targets():
    records = []
    for text in range(4):
        for feature in range(5):  # top-1 edits every target and deactivates 2 of 5
            records.append(record("top1", text, feature, 1, 0.0 if feature < 2 else 1.0))
            # random-of-top-5 finds a predecessor for 2 of 5 and deactivates both: 100% on its own denominator
            records.append(record("random_top5", text, feature, 1 if feature >= 3 else 0,
                                  0.0 if feature >= 3 else 2.0))
    summary = summarize(records)
    everything = summary["all_targets"]
    assert everything["top1"]["n"] == everything["random_top5"]["n"] == 20
    assert everything["top1"]["success_rate"]["value"] == pytest.approx(0.4)
    assert everything["random_top5"]["success_rate"]["value"] == pytest.approx(0.4)  # not 100%
    assert everything["random_top5"]["mean_activation_change"]["value"] == pytest.approx(0.4)  # unedited: 0
    common = summary["common_targets"]  # features 3 and 4: top-1 0%, random 100%
    assert common["top1"]["n"] == 8 and common["random_top5"]["success_rate"]["value"] == 1.0
    paired = summary["top1_vs_random_top5"]
    assert paired["common_targets"]["success_rate"]["difference"]["value"] == -1.0
    assert paired["common_targets"]["success_rate"]["verdict"] == "top1 worse"
    assert paired["all_targets"]["success_rate"]["verdict"] == "no difference"
    with pytest.raises(ValueError, match="same targets"):
        summarize(records[:-1])


@pytest.fixture(scope="module")
def bank():
    return persistent_bank()


def test_searches_share_the_targets_and_exhaustive_bounds_its_subsets(tiny, bank):
    scores = {site: layer_scores(bank, site, k=5) for site in [Site(1, "resid_post"), Site(2, "resid_post")]}
    for layer in scores.values():
        add_permutations(bank, layer)
    records = deactivation_records(tiny, bank, scores, TEXTS, tokens_per_text=2, max_targets=4, search_targets=2,
                                   max_subset=3)
    by = {}
    for rec in records:
        by.setdefault(rec.strategy, {})[rec.key] = rec
    assert set(by) == {"top1", "top5", "random_top5", "permutation", "greedy", "exhaustive"}
    assert len({frozenset(by[s]) for s in ("top1", "top5", "random_top5", "permutation")}) == 1  # the same targets
    searched = set(by["exhaustive"])
    assert searched == set(by["greedy"]) and 0 < len(searched) < len(by["top1"])
    for key in searched:
        best = by["exhaustive"][key]
        # top-1 (one feature per site) and random-of-top-5 edits are subsets of the pool of at most 3 features
        for strategy in ("top1", "random_top5"):
            assert best.z_new <= by[strategy][key].z_new + 1e-5
        if best.pool <= 3:  # then the top-5 edit (the whole pool) was tried too
            assert best.z_new <= by["top5"][key].z_new + 1e-5
        assert best.tried == subset_count(best.pool, 3)
    summary = summarize(records)
    assert {row["n"] for row in summary["searched_targets"].values()} == {len(searched)}
    assert {row["n"] for row in summary["all_targets"].values()} == {len(by["top1"])}


def standard_sae(w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor) -> StandardSAE:
    sae = StandardSAE(StandardSAEConfig(d_in=w_enc.shape[0], d_sae=w_enc.shape[1]))
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.zero_()
    return sae.eval()


def test_on_a_constructed_model_case_exhaustive_deactivates_where_greedy_cannot(tiny):
    """A target at 1/res that switches off only when two predecessors at 0/res are removed together."""
    d, target_site, pred = tiny.cfg.d_model, Site(1, "resid_post"), Site(0, "resid_post")
    v = unit(torch.randn(6, d, generator=torch.Generator().manual_seed(3)))
    predecessor = standard_sae(v.T, torch.full((6,), 4.0), v)  # all six active: a = v.x + 4
    identity = torch.eye(d)
    probe = standard_sae(torch.cat([identity, -identity], 1), torch.zeros(2 * d), torch.zeros(2 * d, d))
    tokens = tiny.to_tokens("The cat sat on the mat")
    position = 3
    resid = cache_sites(tiny, tokens, [Site(1, "resid_pre"), pred])
    assert (predecessor.encode(resid[pred][0, position]) > 0).all()
    args = (tokens[:, : position + 1], resid[Site(1, "resid_pre")][:, : position + 1])

    def h_after(edits):  # the residual at 1/res after each edit, read through the +-identity probe
        saes = {pred: predecessor, target_site: probe}
        z, _ = _run_rows(tiny, saes, *args, target_site, 1, position, [(e, 0.0) for e in edits])
        return z[:, :d] - z[:, d:]

    h = h_after([{}, {pred: [0, 1]}] + [{pred: [i]} for i in range(6)])
    w = unit(h[0] - h[1])
    p = h @ w  # pre-activations along w: clean, pair, each single
    assert p[1] < p[2:].min()  # removing the pair lowers it more than any single feature
    threshold = float(p[1] + p[2:].min()) / 2
    target = standard_sae(torch.stack([w, torch.zeros(d)], 1), torch.tensor([-threshold, -1.0]),
                          torch.stack([unit(v[0] + v[1]), unit(v[2])]))
    saes = {pred: predecessor, target_site: target}
    z_old = float(target.encode(h[0])[0].detach())
    assert z_old > 0
    layer = layer_scores(saes, target_site, k=2)
    pool = [(pred, int(j)) for j in layer.matches["res"].indices[0].tolist()]
    assert sorted(j for _, j in pool) == [0, 1]  # the pair are the target's two best matches
    evaluate = target_evaluator(tiny, saes, *args, target_site, position, 0, 0.0)
    greedy = greedy_search({pred: list(range(6))}, evaluate, z_old)
    assert greedy.size == 1 and greedy.z_new > 0  # one feature per site: never the pair
    found = exhaustive_search(pool, evaluate, z_old, max_size=2)
    assert found.edit == {pred: [0, 1]} and found.z_new == 0.0
