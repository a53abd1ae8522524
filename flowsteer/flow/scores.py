"""Feature Flow's similarity scores s^R, s^M, s^A (arXiv 2502.03032, §3.3).

For a feature f of the residual SAE at layer L, s^P is the largest cosine similarity between f's
decoder direction and any decoder direction of the SAE at predecessor position P: the previous
residual position (R), and the MLP (M) and attention (A) outputs of block L. Computed for every
feature of a layer at once by chunked `topk_cosine`; k > 1 keeps the k best predecessors too
(the top-5 strategies of the deactivation and group experiments).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from flowsteer.flow.folding import Weights
from flowsteer.flow.matching import CHUNK_BYTES, Matches, permutation_match, topk_cosine
from flowsteer.flow.topology import predecessor_sites, scored_sites
from flowsteer.sites import Site


@dataclass
class LayerScores:
    """Backward matches of every feature (or of ``rows``) of one residual SAE to its predecessors.

    ``matches[p]`` for p in ``res``/``mlp``/``att`` (those with SAEs) holds the k best predecessor
    features; ``score(p)`` is s^P (top-1 cosine) and ``top1(p)`` the matched index.
    """

    site: Site
    predecessors: dict[str, Site]
    matches: dict[str, Matches]
    rows: Int[Tensor, " f"]
    permutations: dict[str, Matches] = field(default_factory=dict)

    def score(self, key: str) -> Float[Tensor, " f"]:
        return self.matches[key].top1_scores

    def top1(self, key: str) -> Int[Tensor, " f"]:
        return self.matches[key].top1

    def as_dict(self) -> dict[str, Tensor]:
        """Flat tensors, e.g. for safetensors: ``s_res``, ``index_res``, ...; a missing predecessor is absent."""
        out = {"rows": self.rows}
        for key, match in self.matches.items():
            out[f"s_{key}"] = match.top1_scores.contiguous()
            out[f"index_{key}"] = match.top1.contiguous()
        return out


@torch.no_grad()
def layer_scores(
    saes: Mapping[Site, object],
    site: Site | str,
    *,
    k: int = 1,
    rows: Tensor | None = None,
    weights: Weights = "decoder",
    chunk_bytes: int = CHUNK_BYTES,
) -> LayerScores:
    """s^R, s^M, s^A (and the k best predecessors) of the features of the residual SAE at ``site``."""
    site = Site.parse(site)
    if site not in saes:
        raise KeyError(f"no SAE at {site}; the bank has SAEs at {', '.join(map(str, sorted(saes)))}")
    predecessors = predecessor_sites(saes, site)
    if not predecessors:
        raise ValueError(f"{site} has no predecessor SAEs (previous residual, MLP or attention of its block)")
    n_features = saes[site].cfg.d_sae
    rows = torch.arange(n_features) if rows is None else torch.as_tensor(rows).long().flatten()
    matches = {
        key: topk_cosine(saes[site], saes[pred], k, weights=weights, rows=rows, chunk_bytes=chunk_bytes)
        for key, pred in predecessors.items()
    }
    return LayerScores(site, predecessors, matches, rows.cpu())


def add_permutations(saes: Mapping[Site, object], scores: LayerScores, *, weights: Weights = "decoder") -> None:
    """Attach SAE Match permutations (target layer -> each predecessor) to ``scores``, in place."""
    for key, pred in scores.predecessors.items():
        full = permutation_match(saes[scores.site], saes[pred], weights=weights)
        scores.permutations[key] = Matches(full.indices[scores.rows], full.scores[scores.rows])


def model_scores(
    saes: Mapping[Site, object],
    *,
    k: int = 1,
    weights: Weights = "decoder",
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> dict[Site, LayerScores]:
    """`layer_scores` of every residual SAE that has predecessors, in forward order (a tqdm bar unless
    ``progress=False``)."""
    sites = tqdm(scored_sites(saes), desc="flow scores", unit="layer", disable=not progress, leave=False)
    return {site: layer_scores(saes, site, k=k, weights=weights, chunk_bytes=chunk_bytes) for site in sites}
