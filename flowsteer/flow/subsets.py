"""Searches over sets of predecessor features for the one that deactivates a target best (Feature Flow,
arXiv 2502.03032, Table 1's "exhaustive search" reference, which the paper does not define precisely).

Both searches see the model only through ``evaluate(edits) -> z_new``, the target's activation after each
edit (an edit maps a predecessor site to the features rescaled there), so they can be tested against any
function:

- `exhaustive_search`: every non-empty subset of a candidate ``pool`` with at most ``max_size`` features is
  tried; the result is the subset with the lowest z_new (the smallest such subset on ties). It is exhaustive
  over that space and nothing larger: the pool and ``max_size`` are part of its name in every table.
- `greedy_search`: per predecessor site, every candidate feature is tried alone and the one that lowers the
  target most is kept (if any lowers it); the kept ones (at most one per site) are rescaled together. It
  can miss a pair of features at one site that deactivates the target only together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

import torch
from jaxtyping import Float
from torch import Tensor

from flowsteer.sites import Site

Edit = dict[Site, list[int]]  # features to rescale at each predecessor site
Candidate = tuple[Site, int]
Evaluate = Callable[[Sequence[Edit]], Float[Tensor, " rows"]]  # z_new of the target for each edit


@dataclass(frozen=True)
class SearchResult:
    """The best edit a search found, the target's activation after it, and how many edits it tried."""

    edit: Edit
    z_new: float
    tried: int

    @property
    def size(self) -> int:
        return sum(map(len, self.edit.values()))


def as_edit(candidates: Sequence[Candidate]) -> Edit:
    edit: Edit = {}
    for site, feature in candidates:
        edit.setdefault(site, []).append(feature)
    return {site: sorted(features) for site, features in sorted(edit.items())}


def subset_count(pool_size: int, max_size: int) -> int:
    """How many non-empty subsets of at most ``max_size`` features a pool of ``pool_size`` has."""
    return sum(comb(pool_size, size) for size in range(1, min(max_size, pool_size) + 1))


def _evaluate_all(evaluate: Evaluate, edits: list[Edit], chunk: int) -> Float[Tensor, " rows"]:
    values = [evaluate(edits[i : i + chunk]).flatten().float() for i in range(0, len(edits), chunk)]
    return torch.cat(values) if values else torch.zeros(0)


def exhaustive_search(
    pool: Sequence[Candidate], evaluate: Evaluate, z_old: float, *, max_size: int, chunk: int = 256
) -> SearchResult:
    """The lowest target activation over every non-empty subset of ``pool`` with at most ``max_size``
    features (subsets in order of size, so ties go to the smallest). An empty pool gives no edit and
    ``z_old``."""
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    pool = sorted(set(pool))
    subsets = [c for size in range(1, min(max_size, len(pool)) + 1) for c in combinations(pool, size)]
    if not subsets:
        return SearchResult({}, z_old, 0)
    values = _evaluate_all(evaluate, [as_edit(s) for s in subsets], chunk)
    best = int(values.argmin())  # argmin returns the first minimum: the smallest subset on ties
    return SearchResult(as_edit(subsets[best]), float(values[best]), len(subsets))


def greedy_search(
    per_site: Mapping[Site, Sequence[int]], evaluate: Evaluate, z_old: float, *, chunk: int = 256
) -> SearchResult:
    """Best single feature per site (among ``per_site[site]``, kept only if it lowers the target below
    ``z_old``), then those rescaled together."""
    singles = [(site, int(f)) for site, features in sorted(per_site.items()) for f in sorted(set(features))]
    if not singles:
        return SearchResult({}, z_old, 0)
    values = _evaluate_all(evaluate, [as_edit([c]) for c in singles], chunk)
    best: dict[Site, tuple[float, int]] = {}
    for (site, feature), value in zip(singles, values.tolist(), strict=True):
        if value < z_old and (site not in best or value < best[site][0]):
            best[site] = (value, feature)
    edit = as_edit([(site, feature) for site, (_, feature) in best.items()])
    if not edit:
        return SearchResult({}, z_old, len(singles))
    return SearchResult(edit, float(evaluate([edit])[0]), len(singles) + 1)
