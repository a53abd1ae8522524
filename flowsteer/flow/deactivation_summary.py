"""Deactivation results on equal terms: every strategy on one set of (target, token) pairs, each figure with its
95% interval and its definition beside it (Feature Flow Table 1; records from `flowsteer.flow.deactivation`).

Three target sets, each shared by every strategy summarized on it (the summary refuses records where a strategy
misses a target of the set):

- ``all_targets``: every sampled target (active, with an active top-1 predecessor). A strategy that finds no
  active predecessor edits nothing: the target is not deactivated and its activation change is 0.
- ``common_targets``: the targets where every matching strategy found an active predecessor (the paper's
  per-strategy denominator, made one for all).
- ``searched_targets``: the targets that also got the ``greedy`` and ``exhaustive`` searches; every strategy
  and both searches on them.

Intervals are cluster bootstraps over texts (`flowsteer.evals.intervals.ratio_of_sums`): the targets of one text
share its tokens and are not independent. ``top1_vs_random_top5`` (and ``exhaustive_vs_greedy``) give paired
per-target differences on the same set, with the verdict "better", "worse" or "no difference" (interval holds 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from flowsteer.evals.intervals import Estimate, ratio_of_sums
from flowsteer.flow.deactivation import SEARCHES, Record
from flowsteer.flow.groups import GROUPS
from flowsteer.sites import Site

SUCCESS = (
    "share of targets deactivated: the target's SAE activation at the edited token is 0 after the edit (TopK SAEs: "
    "it left the top k); a strategy that finds no active predecessor edits nothing and counts as not deactivated"
)
CHANGE = "mean over targets of 1 - z_new / z_old at the edited token (0 where nothing is edited)"
SETS = {
    "all_targets": "every sampled target (active, with an active top-1 predecessor; 'From nowhere' excluded)",
    "common_targets": "the sampled targets where every matching strategy found an active predecessor",
    "searched_targets": "the first targets of each layer and token, which also got the greedy and exhaustive "
    "searches",
}
Key = tuple[str, int, int, int]


def _clustered(records: Sequence[Record], value: Callable[[Record], float]) -> Estimate:
    """Mean of ``value`` over records, interval from a bootstrap over texts."""
    sums, counts = defaultdict(float), defaultdict(int)
    for rec in records:
        sums[rec.text] += value(rec)
        counts[rec.text] += 1
    texts = sorted(sums)
    return ratio_of_sums([sums[t] for t in texts], [counts[t] for t in texts])


def _change(rec: Record) -> float:
    return rec.activation_change if rec.edited else 0.0


def _stats(selected: Sequence[Record]) -> dict:
    return {
        "n": len(selected),
        "no_active_predecessor": sum(not rec.edited for rec in selected),
        "success_rate": _clustered(selected, lambda rec: float(rec.deactivated)).to_dict(),
        "mean_activation_change": _clustered(selected, _change).to_dict(),
    }


def _by_key(records: Sequence[Record], strategy: str) -> dict[Key, Record]:
    return {rec.key: rec for rec in records if rec.strategy == strategy}


def strategy_table(records: Sequence[Record], keys: set[Key], strategies: Sequence[str]) -> dict:
    """Success rate and mean activation change of each strategy over exactly ``keys`` (and per target site);
    raises if a strategy has no record for one of them."""
    out = {}
    for strategy in strategies:
        mine = _by_key(records, strategy)
        if missing := keys - mine.keys():
            raise ValueError(f"strategy {strategy!r} has no record for {len(missing)} of the {len(keys)} targets")
        selected = [mine[key] for key in sorted(keys)]
        sites = sorted({rec.site for rec in selected}, key=lambda s: Site.parse(s).order)
        out[strategy] = _stats(selected) | {
            "per_site": {site: _stats([rec for rec in selected if rec.site == site]) for site in sites},
            "mean_features_edited": sum(rec.edited for rec in selected) / len(selected) if selected else None,
        }
    return out


def paired(records: Sequence[Record], keys: set[Key], a: str, b: str) -> dict:
    """Per-target differences a - b (deactivated, activation change) on ``keys``, with a verdict each."""
    first, second = _by_key(records, a), _by_key(records, b)
    pairs = [(first[key], second[key]) for key in sorted(keys)]
    out = {"n": len(pairs)}
    for name, value in (("success_rate", lambda rec: float(rec.deactivated)), ("mean_activation_change", _change)):
        difference = {x.key: value(x) - value(y) for x, y in pairs}
        estimate = _clustered([x for x, _ in pairs], lambda rec, d=difference: d[rec.key])
        if estimate.low <= 0 <= estimate.high:
            verdict = "no difference"
        else:
            verdict = f"{a} better" if estimate.value > 0 else f"{a} worse"
        out[name] = {"difference": estimate.to_dict(), "verdict": verdict}
    return out


def summarize(records: Sequence[Record], strategies: Sequence[str] | None = None) -> dict:
    """The three equal-terms tables (see the module docstring), the paired comparisons and the definitions."""
    present = list(dict.fromkeys(rec.strategy for rec in records))
    strategies = [s for s in (strategies or present) if s not in SEARCHES]
    keys = [set(_by_key(records, s)) for s in strategies]
    if any(k != keys[0] for k in keys):
        raise ValueError("the strategies were not run on the same targets")
    every = keys[0] if keys else set()
    common = {key for key in every if all(_by_key(records, s)[key].edited for s in strategies)}
    searched = set(_by_key(records, "exhaustive")) if "exhaustive" in present else set()
    out = {
        "definitions": {"success_rate": SUCCESS, "mean_activation_change": CHANGE, "sets": SETS,
                        "interval": "95%, percentile bootstrap over texts (2,000 resamples)"},
        "all_targets": strategy_table(records, every, strategies) if every else {},
        "common_targets": strategy_table(records, common, strategies) if common else {},
        "searched_targets": strategy_table(records, searched, [*strategies, *SEARCHES]) if searched else {},
    }
    if {"top1", "random_top5"} <= set(strategies):
        out["top1_vs_random_top5"] = {name: paired(records, chosen, "top1", "random_top5")
                                      for name, chosen in (("all_targets", every), ("common_targets", common))
                                      if chosen}
    if searched:
        out["exhaustive_vs_greedy"] = paired(records, searched, "exhaustive", "greedy")
        out["exhaustive_search"] = search_stats(records, searched)
    return out


def search_stats(records: Sequence[Record], keys: set[Key]) -> dict:
    """Pool sizes and edits tried by the searches, and how often the exhaustive pool was searched completely."""
    exhaustive = [rec for rec in records if rec.strategy == "exhaustive" and rec.key in keys]
    greedy = [rec for rec in records if rec.strategy == "greedy" and rec.key in keys]
    pools = sorted(rec.pool for rec in exhaustive)
    return {
        "pool_size_mean": sum(pools) / len(pools),
        "pool_size_max": pools[-1],
        "edits_tried_mean": sum(rec.tried for rec in exhaustive) / len(exhaustive),
        "greedy_edits_tried_mean": sum(rec.tried for rec in greedy) / len(greedy) if greedy else None,
        "best_subset_size_mean": sum(rec.edited for rec in exhaustive) / len(exhaustive),
    }


def sweep_summary(records: Sequence[Record]) -> dict:
    """Per r (and per top-1 group): mean activation change, share deactivated and mean relative loss change,
    each with a 95% interval (bootstrap over texts)."""

    def stats(selected: list[Record]) -> dict:
        return {
            "targets": len(selected),
            "activation_change": _clustered(selected, lambda rec: rec.activation_change).to_dict(),
            "deactivated": _clustered(selected, lambda rec: float(rec.deactivated)).to_dict(),
            "relative_loss_change": _clustered(
                selected, lambda rec: (rec.loss_new - rec.loss_old) / rec.loss_old
            ).to_dict(),
        }

    counted = [rec for rec in records if rec.edited]
    out = {}
    for r in sorted({rec.r for rec in counted}):
        mine = [rec for rec in counted if rec.r == r]
        groups = {
            g: stats([rec for rec in mine if rec.group == g]) for g in GROUPS if any(rec.group == g for rec in mine)
        }
        out[str(r)] = stats(mine) | {"per_group": groups}
    return out
