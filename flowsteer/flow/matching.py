"""Data-free matching of SAE features between two SAEs of the same input dimension.

`topk_cosine` is Feature Flow's operator T^(A->B) = 1[top_k(Ŵ_dec^(A)ᵀ Ŵ_dec^(B))] (arXiv
2502.03032, §3.2): for every feature of the source SAE A, the k features of the target SAE B whose
unit-normalised decoder directions have the largest cosine similarity, best first (k = 1 by
default: many-to-one matching). It runs over blocks of source rows, so memory stays at one
``rows x F_B`` block (``chunk_bytes``, 64 MiB by default) and the F_A x F_B matrix never exists.
Target norms are applied to each block in place rather than by normalising a copy of B.

`permutation_match` is SAE Match (arXiv 2410.07656, Eq. 3): the one-to-one assignment minimising
the summed squared distance between folded feature vectors, solved exactly by
`scipy.optimize.linear_sum_assignment`. It needs the full F_A x F_B cost matrix (float64, e.g.
170 MB at F = 4,608, 2.1 GB at F = 16,384): that is inherent to linear assignment.

Both accept an SAE or a plain ``[F, d]`` tensor of feature vectors, and ``weights`` = ``decoder``
(the papers' default), ``encoder`` (columns of W_enc) or ``both``. For cosine, ``both`` averages
the decoder and encoder cosines; for the permutation it adds the two squared distances.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from flowsteer.flow.folding import Weights, check_weights, matching_vectors

CHUNK_BYTES = 64 * 2**20
Vectors = nn.Module | Float[Tensor, "f d"]


@dataclass(frozen=True)
class Matches:
    """For each (selected) source feature: its k matched target features, best first, and their cosine
    similarities. Unmatched rows (a rectangular permutation) have index -1 and score NaN."""

    indices: Int[Tensor, "f k"]
    scores: Float[Tensor, "f k"]

    @property
    def top1(self) -> Int[Tensor, " f"]:
        return self.indices[:, 0]

    @property
    def top1_scores(self) -> Float[Tensor, " f"]:
        return self.scores[:, 0]

    def __len__(self) -> int:
        return len(self.indices)


def _vectors(x: Vectors, which: str) -> Float[Tensor, "f d"]:
    """Feature vectors without copying: W_dec rows, or a transposed view of W_enc."""
    if isinstance(x, Tensor):
        if x.ndim != 2:
            raise ValueError(f"feature vectors must be [F, d], got shape {tuple(x.shape)}")
        if which == "encoder":
            raise ValueError("weights='encoder' needs SAEs, not plain vectors")
        return x.detach()
    return x.W_dec.detach() if which == "decoder" else x.W_enc.detach().T


def _pairs(source: Vectors, target: Vectors, weights: str) -> list[tuple[Tensor, Tensor]]:
    check_weights(weights)
    kinds = ("decoder", "encoder") if weights == "both" else (weights,)
    pairs = [(_vectors(source, kind), _vectors(target, kind)) for kind in kinds]
    for a, b in pairs:
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"cannot match features of dimension {a.shape[1]} with features of dimension {b.shape[1]}")
    return pairs


def _inverse_norms(x: Tensor) -> Tensor:
    norms = x.norm(dim=1)
    return torch.where(norms > 0, 1.0 / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(norms))


def cosine_blocks(
    source: Vectors,
    target: Vectors,
    *,
    weights: Weights = "decoder",
    rows: Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[tuple[Int[Tensor, " r"], Float[Tensor, "r f_target"]]]:
    """Yield ``(row indices, cosine block)`` covering the source rows (all, or ``rows``) in blocks of at
    most ``chunk_bytes``. Each block is a fresh tensor the caller may modify."""
    pairs = _pairs(source, target, weights)
    n_source, n_target = pairs[0][0].shape[0], pairs[0][1].shape[0]
    device = pairs[0][0].device
    rows = torch.arange(n_source, device=device) if rows is None else torch.as_tensor(rows, device=device).long()
    if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n_source):
        raise IndexError(f"source feature indices must lie in 0..{n_source - 1}")
    inverse = [_inverse_norms(b) for _, b in pairs]
    step = max(1, chunk_bytes // (n_target * pairs[0][1].element_size()))
    contiguous = rows.numel() == n_source and bool((rows == torch.arange(n_source, device=device)).all())
    for start in range(0, len(rows), step):
        index = rows[start : start + step]
        total = None
        for (a, b), inv_b in zip(pairs, inverse, strict=True):
            block = a[start : start + step] if contiguous else a[index]
            block = block * _inverse_norms(block)[:, None]
            sims = block @ b.T
            sims.mul_(inv_b)
            total = sims if total is None else total.add_(sims)
        if len(pairs) == 2:
            total.mul_(0.5)
        del block, sims
        yield index, total
        del total  # free this block before the next one is computed


@torch.no_grad()
def topk_cosine(
    source: Vectors,
    target: Vectors,
    k: int = 1,
    *,
    weights: Weights = "decoder",
    rows: Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Matches:
    """T^(A->B): for each source feature (all, or ``rows``), the ``k`` target features of highest
    cosine similarity, best first. Memory: one block of ``chunk_bytes`` plus the [F, k] result."""
    n_target = _pairs(source, target, weights)[0][1].shape[0]
    if not 1 <= k <= n_target:
        raise ValueError(f"k={k} must lie in 1..{n_target} (the target SAE's number of features)")
    indices, scores = [], []
    for _, block in cosine_blocks(source, target, weights=weights, rows=rows, chunk_bytes=chunk_bytes):
        if k == 1:
            value, index = block.max(dim=1, keepdim=True)
        else:
            value, index = block.topk(k, dim=1)
        indices.append(index.cpu())
        scores.append(value.float().cpu())
        del block  # only one block is ever alive
    if not indices:
        return Matches(torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k))
    return Matches(torch.cat(indices), torch.cat(scores))


@torch.no_grad()
def pair_cosines(
    source: Vectors, target: Vectors, source_rows: Tensor, target_rows: Tensor, *, weights: Weights = "decoder"
) -> Float[Tensor, " n"]:
    """Cosine similarity of the pairs (source_rows[i], target_rows[i])."""
    total = 0.0
    pairs = _pairs(source, target, weights)
    for a, b in pairs:
        x = a[torch.as_tensor(source_rows, device=a.device).long()].float()
        y = b[torch.as_tensor(target_rows, device=b.device).long()].float()
        total = total + torch.nn.functional.cosine_similarity(x, y, dim=1)
    return (total / len(pairs)).cpu()


@torch.no_grad()
def squared_distances(
    source: nn.Module | Tensor,
    target: nn.Module | Tensor,
    *,
    weights: Weights = "decoder",
    fold: bool = True,
    source_scales: Tensor | None = None,
    target_scales: Tensor | None = None,
) -> np.ndarray:
    """The F_A x F_B matrix of summed squared distances between (folded) feature vectors (float64)."""
    check_weights(weights)
    kinds = ("decoder", "encoder") if weights == "both" else (weights,)
    cost = None
    for kind in kinds:
        if isinstance(source, Tensor) or isinstance(target, Tensor):
            a, b = _vectors(source, kind).double(), _vectors(target, kind).double()
        else:
            a = matching_vectors(source, kind, source_scales, fold=fold).double()
            b = matching_vectors(target, kind, target_scales, fold=fold).double()
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"cannot match features of dimension {a.shape[1]} with features of dimension {b.shape[1]}")
        dist = (a.square().sum(1)[:, None] + b.square().sum(1)[None, :]).sub_(a @ b.T, alpha=2.0).cpu().numpy()
        cost = dist if cost is None else cost.__iadd__(dist)
    return cost


@torch.no_grad()
def permutation_match(
    source: nn.Module | Tensor,
    target: nn.Module | Tensor,
    *,
    weights: Weights = "decoder",
    fold: bool = True,
    source_scales: Tensor | None = None,
    target_scales: Tensor | None = None,
) -> Matches:
    """SAE Match: the one-to-one matching of source to target features with the least summed squared
    distance between folded feature vectors (`flowsteer.flow.folding`), by exact linear assignment.

    ``fold=False`` compares the raw vectors. Scores are the decoder cosines of the matched pairs.
    """
    cost = squared_distances(
        source, target, weights=weights, fold=fold, source_scales=source_scales, target_scales=target_scales
    )
    row, col = linear_sum_assignment(cost)
    indices = torch.full((cost.shape[0], 1), -1, dtype=torch.long)
    indices[torch.as_tensor(row), 0] = torch.as_tensor(col, dtype=torch.long)
    scores = torch.full((cost.shape[0], 1), float("nan"))
    scores[torch.as_tensor(row), 0] = pair_cosines(source, target, torch.as_tensor(row), torch.as_tensor(col))
    return Matches(indices, scores)


def compose(first: Matches, second: Matches) -> Matches:
    """Chain top-1 matches A->B and B->C into A->C (SAE Match's P^(B->C) P^(A->B)).

    The score of a chained match is its weakest link, min(s_AB, s_BC)."""
    index = first.top1
    valid = index >= 0
    out = torch.full_like(index, -1)
    out[valid] = second.top1[index[valid]]
    scores = torch.full((len(index),), float("nan"))
    scores[valid] = torch.minimum(first.top1_scores[valid], second.top1_scores[index[valid]])
    scores[out < 0] = float("nan")
    return Matches(out[:, None], scores[:, None])
