"""Data-driven groups (Feature Flow, arXiv 2502.03032, §5.1 and App. A.1).

For every residual feature active on a sampled token, its matched predecessors on the previous
residual, the MLP and the attention SAE are checked for activity on the same token. The set of
active predecessors gives one of eight groups ("From RES & MLP", ..., "From nowhere").

Matching strategies (Fig. 15a): ``top1`` (the paper's default), ``top5`` (a predecessor counts as
active if any of its top-5 matches is), ``random_top5`` (one of the top 5 at random) and
``permutation`` (SAE Match's one-to-one assignment).

On the records: per-layer group shares, the group transition matrix (Fig. 13: P(a feature seen in
group A is also seen in group B), over all layers), and Mann-Whitney U tests between every pair of
groups per dataset and layer on s^R, s^M, s^A (share of tests with p < 0.001).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch
from jaxtyping import Bool, Int
from scipy.stats import mannwhitneyu
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.flow.scores import LayerScores
from flowsteer.flow.tokens import Corpus, gather, sample_positions, token_batches
from flowsteer.flow.topology import PREDECESSORS
from flowsteer.patching import cache_sites
from flowsteer.sites import Site

GROUPS = (
    "From nowhere",
    "From RES",
    "From MLP",
    "From ATT",
    "From RES & MLP",
    "From RES & ATT",
    "From MLP & ATT",
    "From RES & MLP & ATT",
)
BITS = {"res": 1, "mlp": 2, "att": 4}
GROUP_OF_BITS = torch.tensor([0, 1, 2, 4, 3, 5, 6, 7])  # bitmask (res=1, mlp=2, att=4) -> index in GROUPS
DEACTIVATION_STRATEGIES = ("top1", "top5", "random_top5", "permutation")


def group_contains(group: int, key: str) -> bool:
    """Whether predecessor ``key`` is active in ``GROUPS[group]``."""
    bits = int((GROUP_OF_BITS == group).nonzero()[0])
    return bool(bits & BITS[key])


def candidates(
    scores: LayerScores, key: str, features: Int[Tensor, " n"], strategy: str, generator: torch.Generator
) -> Int[Tensor, "n c"]:
    """Predecessor indices at ``key`` for each target feature under a matching ``strategy``."""
    if strategy == "permutation":
        if key not in scores.permutations:
            raise ValueError("strategy 'permutation' needs flowsteer.flow.scores.add_permutations(saes, scores)")
        return scores.permutations[key].indices[features]
    top = scores.matches[key].indices
    if strategy == "top1":
        return top[features, :1]
    if top.shape[1] < 5:
        raise ValueError(f"strategy {strategy!r} needs layer scores with k >= 5, got k = {top.shape[1]}")
    if strategy == "top5":
        return top[features, :5]
    if strategy == "random_top5":
        pick = torch.randint(0, 5, (len(features), 1), generator=generator)
        return top[features, :5].gather(1, pick)
    raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(DEACTIVATION_STRATEGIES)}")


def active_predecessors(acts: Tensor, rows: Int[Tensor, " n"], cands: Int[Tensor, "n c"]) -> Bool[Tensor, " n"]:
    """Whether any candidate predecessor is active (> 0) in the matching row of ``acts`` [tokens, F]."""
    valid = cands >= 0
    picked = acts[rows[:, None], cands.clamp(min=0)]
    return ((picked > 0) & valid).any(1)


@dataclass
class GroupRecords:
    """One row per (token, active residual feature): where it was seen, its group and its scores."""

    dataset: list[str] = field(default_factory=list)
    site: list[str] = field(default_factory=list)
    feature: list[int] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key in PREDECESSORS})

    def __len__(self) -> int:
        return len(self.group)

    def extend(self, dataset: str, site: Site, features: Tensor, groups: Tensor, scores: dict[str, Tensor]) -> None:
        n = len(features)
        self.dataset += [dataset] * n
        self.site += [str(site)] * n
        self.feature += features.tolist()
        self.group += groups.tolist()
        for key in PREDECESSORS:
            values = scores[key].tolist() if key in scores else [float("nan")] * n
            self.scores[key] += values


def group_records(
    model: HookedTransformer,
    saes: Mapping[Site, object],
    scores: Mapping[Site, LayerScores],
    corpus: Corpus,
    *,
    strategy: str = "top1",
    records: GroupRecords | None = None,
    **options,
) -> GroupRecords:
    """Assign every feature active on ``tokens_per_text`` random tokens of each text to its group
    under one matching ``strategy`` (see `group_records_by_strategy` for the options)."""
    found = group_records_by_strategy(
        model,
        saes,
        scores,
        corpus,
        strategies=(strategy,),
        records=None if records is None else {strategy: records},
        **options,
    )
    return found[strategy]


@torch.no_grad()
def group_records_by_strategy(
    model: HookedTransformer,
    saes: Mapping[Site, object],
    scores: Mapping[Site, LayerScores],
    corpus: Corpus,
    *,
    strategies: Sequence[str] = DEACTIVATION_STRATEGIES,
    dataset: str = "corpus",
    tokens_per_text: int = 5,
    max_features: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    max_tokens: int = 128,
    records: dict[str, GroupRecords] | None = None,
    progress: bool = True,
) -> dict[str, GroupRecords]:
    """Group records under each matching strategy from one pass over the corpus (the same tokens and
    features for every strategy; a tqdm bar over its batches unless ``progress=False``).

    ``scores`` are the `layer_scores` of the layers to analyse (k >= 5 for the top-5 strategies,
    with `add_permutations` for ``permutation``). ``max_features`` caps the features sampled per
    layer and token (None: all active ones). ``records`` (by strategy) are extended in place.
    """
    generator = torch.Generator().manual_seed(seed)
    records = dict(records or {})
    for strategy in strategies:
        records.setdefault(strategy, GroupRecords())
    sites = sorted({s for layer in scores.values() for s in [layer.site, *layer.predecessors.values()]})
    for batch in tqdm(
        token_batches(model, corpus, batch_size=batch_size, max_tokens=max_tokens),
        desc=f"groups {dataset}",
        unit="batch",
        leave=False,
        disable=not progress,
    ):
        positions = sample_positions(batch, tokens_per_text, generator)
        if not positions:
            continue
        acts = cache_sites(model, batch, sites)
        encoded = {s: saes[s].encode(gather(acts[s], positions).to(saes[s].W_dec)).cpu() for s in sites}
        for site, layer in scores.items():
            target = encoded[site]
            token, feature = (target > 0).nonzero(as_tuple=True)
            if max_features is not None:
                keep = []
                for t in token.unique().tolist():
                    where = (token == t).nonzero().flatten()
                    keep.append(where[torch.randperm(len(where), generator=generator)[:max_features]])
                keep = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long)
                token, feature = token[keep], feature[keep]
            picked_scores = {key: layer.score(key)[feature] for key in layer.matches}
            for strategy in strategies:
                bits = torch.zeros(len(feature), dtype=torch.long)
                for key, pred in layer.predecessors.items():
                    cands = candidates(layer, key, feature, strategy, generator)
                    bits += BITS[key] * active_predecessors(encoded[pred], token, cands).long()
                records[strategy].extend(dataset, site, feature, GROUP_OF_BITS[bits], picked_scores)
    return records


def group_shares(records: GroupRecords, dataset: str | None = None) -> dict[str, dict[str, float]]:
    """``{site: {group: share of that site's records}}`` (of one ``dataset``, or all)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(GROUPS)))
    for name, site, group in zip(records.dataset, records.site, records.group, strict=True):
        if dataset is None or name == dataset:
            counts[site][group] += 1
    ordered = sorted(counts, key=lambda s: Site.parse(s).order)
    return {site: dict(zip(GROUPS, (counts[site] / counts[site].sum()).tolist(), strict=True)) for site in ordered}


def transition_matrix(records: GroupRecords) -> np.ndarray:
    """M[a, b] = P(a feature seen in group a is also seen in group b), features pooled over layers
    (a feature is a site plus an index; NaN rows for groups never seen)."""
    seen: dict[tuple[str, int], set[int]] = defaultdict(set)
    for site, feature, group in zip(records.site, records.feature, records.group, strict=True):
        seen[(site, feature)].add(group)
    both = np.zeros((len(GROUPS), len(GROUPS)))
    for groups in seen.values():
        for a in groups:
            for b in groups:
                both[a, b] += 1
    diagonal = np.diag(both).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return both / diagonal[:, None]


def mann_whitney(records: GroupRecords, *, alpha: float = 0.001, min_size: int = 5) -> dict:
    """Two-sided Mann-Whitney U tests of s^R, s^M, s^A between every pair of groups, per dataset and
    layer (pairs with at least ``min_size`` records each). Returns every test and, per score, the
    share of tests with p < ``alpha``: overall, per group pair, and split by whether the score's
    module is active in exactly one of the two groups (the paper's observed rule)."""
    by_cell: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    for i, (dataset, site, group) in enumerate(zip(records.dataset, records.site, records.group, strict=True)):
        by_cell[(dataset, site, group)].append(i)
    scores = {key: np.asarray(values, dtype=float) for key, values in records.scores.items()}
    tests = []
    cells = sorted({(d, s) for d, s, _ in by_cell})
    for dataset, site in cells:
        for a, b in combinations(range(len(GROUPS)), 2):
            rows_a, rows_b = by_cell.get((dataset, site, a), []), by_cell.get((dataset, site, b), [])
            for key, values in scores.items():
                x, y = values[rows_a], values[rows_b]
                x, y = x[~np.isnan(x)], y[~np.isnan(y)]
                if len(x) < min_size or len(y) < min_size:
                    continue
                p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue)
                tests.append(
                    dict(
                        dataset=dataset,
                        site=site,
                        group_a=GROUPS[a],
                        group_b=GROUPS[b],
                        score=key,
                        p=p,
                        n_a=len(x),
                        n_b=len(y),
                        differs_in_module=group_contains(a, key) != group_contains(b, key),
                    )
                )
    return {"alpha": alpha, "tests": tests, "share_significant": _shares(tests, alpha)}


def _shares(tests: list[dict], alpha: float) -> dict:
    def share(selected: list[dict]) -> dict:
        return {
            "tests": len(selected),
            "share": (sum(t["p"] < alpha for t in selected) / len(selected)) if selected else None,
        }

    out: dict = {"overall": {}, "by_pair": defaultdict(dict), "module_active_in_one": {}, "module_same_in_both": {}}
    for key in PREDECESSORS:
        mine = [t for t in tests if t["score"] == key]
        out["overall"][key] = share(mine)
        out["module_active_in_one"][key] = share([t for t in mine if t["differs_in_module"]])
        out["module_same_in_both"][key] = share([t for t in mine if not t["differs_in_module"]])
        for a, b in combinations(GROUPS, 2):
            pair = [t for t in mine if t["group_a"] == a and t["group_b"] == b]
            if pair:
                out["by_pair"][f"{a} vs {b}"][key] = share(pair)
    out["by_pair"] = dict(out["by_pair"])
    return out
