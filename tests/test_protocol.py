"""The comparison protocol and its intervals, on methods whose outcomes are known."""

from __future__ import annotations

import random

import pytest

from flowsteer.evals.intervals import mean, rate, ratio_of_means
from flowsteer.evals.protocol import Method, Protocol, compare


def test_wilson_interval_matches_the_closed_form():
    estimate = rate([True] * 7 + [False] * 3)
    z = 1.959963984540054
    n, p = 10, 0.7
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert estimate.value == 0.7 and estimate.n == 10 and estimate.kind == "wilson"
    assert estimate.low == pytest.approx(centre - half, abs=1e-9) and estimate.high == pytest.approx(centre + half)
    assert rate([False] * 20).low == 0 and rate([False] * 20).high > 0.1  # zero successes still has width


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = random.Random(0)
    small = mean([rng.gauss(5, 1) for _ in range(20)])
    large = mean([rng.gauss(5, 1) for _ in range(2000)])
    assert small.low < 5 < small.high and large.low < 5 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    assert mean([3.0, 3.0]).low == mean([3.0, 3.0]).high == 3.0
    ratio = ratio_of_means([2.0, 2.2, 1.8] * 10, [1.0, 1.1, 0.9] * 10)
    assert ratio.value == pytest.approx(2.0) and ratio.low < 2.0 < ratio.high


def _method(name, effects, budget_calls):
    """A method whose success rate is ``effects[setting["s"]]`` on every split, sampled with the seed."""

    def run(setting, split, seed):
        budget_calls.append((name, dict(setting), split, seed))
        rng = random.Random(f"{name}{setting}{split}{seed}")
        p = effects[setting["s"]]
        return {"success": [rng.random() < p for _ in range(400)], "kl": [p / 10] * 400}

    return Method(name, run, [{"s": s} for s in range(len(effects))])


def test_compare_selects_on_validation_reports_once_on_test_and_keeps_the_baseline():
    calls = []
    protocol = Protocol(budget=3, select="success")
    baseline = lambda setting, split, seed: {"success": [False] * 390 + [True] * 10, "kl": [0.0] * 400}  # noqa: E731
    strong = _method("strong", [0.1, 0.8, 0.5], calls)
    weak = _method("weak", [0.02, 0.03, 0.04], calls)
    result = compare(protocol, baseline, [strong, weak])
    rows = {row.method: row for row in result.rows}
    assert list(rows) == ["baseline", "strong", "weak"]
    assert rows["strong"].setting == {"s": 1} and rows["strong"].settings_tried == 3
    assert rows["strong"].versus_baseline == "better" and rows["weak"].versus_baseline == "no difference"
    # every setting on val with the selection seed, then one test run with the report seed
    strong_calls = [c for c in calls if c[0] == "strong"]
    assert [c[2:] for c in strong_calls] == [("val", 1)] * 3 + [("test", 2)]
    table = result.markdown(["success", "kl"])
    assert "| strong | 3 | s=1 |" in table and "no difference" in table


def test_constraint_and_budget_are_enforced():
    calls = []
    kl_bound = lambda means: means["kl"] < 0.06  # noqa: E731
    result = compare(Protocol(budget=3, select="success", constraint=kl_bound),
                     lambda s, split, seed: {"success": [False] * 10, "kl": [0.0] * 10},
                     [_method("m", [0.1, 0.8, 0.5], calls)])
    assert result.rows[1].setting == {"s": 2} and result.rows[1].constraint_met  # 0.8 had KL 0.08
    with pytest.raises(ValueError, match="brings 2 settings; the protocol gives every method 3"):
        compare(Protocol(budget=3, select="success"), lambda s, split, seed: {"success": [True]},
                [_method("m", [0.1, 0.2], calls)])
    fixed = Method("ablation", lambda s, split, seed: {"success": [True, False]}, fixed=True)
    row = compare(Protocol(budget=3, select="success"), lambda s, split, seed: {"success": [False]}, [fixed]).rows[1]
    assert row.settings_tried == 1 and row.selection == [{"setting": {}, "means": {}}]
    with pytest.raises(ValueError, match="different seeds"):
        Protocol(budget=1, select="success", seeds=(3, 3))
