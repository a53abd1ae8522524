"""Arditi et al.'s direction selection (``select_direction.py``).

For every candidate direction r[i, ℓ] (post-instruction position i, layer ℓ), on validation prompts:

- bypass score: mean refusal log-odds of harmful prompts with r directionally ablated at every layer;
- induce score: mean refusal log-odds of harmless prompts with ActAdd +r at layer ℓ only;
- KL score: mean KL(unpatched ‖ ablated) of harmless prompts' next-token distributions.

A candidate is discarded if KL > 0.1, induce < 0, or ℓ ≥ int(0.8·n_layers); the survivor with the
lowest bypass score is chosen. Candidates whose direction is zero (layer 0 at template tokens, where
harmful and harmless prompts have the same embedding) get NaN scores and are discarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.evals.capability import next_token_kl
from flowsteer.evals.logits import last_position_logits
from flowsteer.refusal.logodds import refusal_log_odds, refusal_token_ids
from flowsteer.steering.contrast import DiffInMeans, ablation_patches, actadd_patches


class NoDirectionSelected(RuntimeError):
    """Every candidate direction was filtered out; the message gives the counts per filter."""


@dataclass(frozen=True)
class DirectionScores:
    """Selection scores of every candidate, indexed [position, layer]."""

    positions: tuple[int, ...]
    layers: tuple[int, ...]
    bypass: Float[Tensor, "pos layer"]
    induce: Float[Tensor, "pos layer"]
    kl: Float[Tensor, "pos layer"]

    def __post_init__(self) -> None:
        shape = (len(self.positions), len(self.layers))
        for name in ("bypass", "induce", "kl"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} scores have shape {tuple(getattr(self, name).shape)}, expected {shape}")

    @classmethod
    def from_dict(cls, data: dict) -> DirectionScores:
        """Inverse of `to_dict` (NaN scores survive as NaN)."""
        grids = {name: torch.tensor(data[name], dtype=torch.float32) for name in ("bypass", "induce", "kl")}
        return cls(tuple(data["positions"]), tuple(data["layers"]), **grids)

    @classmethod
    def concat(cls, parts: Sequence[DirectionScores]) -> DirectionScores:
        """Score grids of disjoint position sets over the same layers, stacked along positions."""
        if not parts or len({part.layers for part in parts}) != 1:
            raise ValueError("concat needs at least one part, all over the same layers")
        return cls(
            tuple(p for part in parts for p in part.positions),
            parts[0].layers,
            *(torch.cat([getattr(part, name) for part in parts]) for name in ("bypass", "induce", "kl")),
        )

    def to_dict(self) -> dict:
        return {
            "positions": list(self.positions),
            "layers": list(self.layers),
            **{name: getattr(self, name).tolist() for name in ("bypass", "induce", "kl")},
        }


@dataclass(frozen=True)
class Selection:
    """The chosen candidate, its scores, and which candidates each filter discarded."""

    position: int
    layer: int
    bypass: float
    induce: float
    kl: float
    kept: Bool[Tensor, "pos layer"]
    discarded_by: dict[str, Bool[Tensor, "pos layer"]]
    thresholds: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "position": self.position,
            "layer": self.layer,
            "bypass": self.bypass,
            "induce": self.induce,
            "kl": self.kl,
            "thresholds": self.thresholds,
            "candidates": int(self.kept.numel()),
            "kept": int(self.kept.sum()),
            "discarded_by": {name: int(mask.sum()) for name, mask in self.discarded_by.items()},
            "kept_mask": self.kept.int().tolist(),
        }


def select_direction(
    scores: DirectionScores,
    n_layers: int,
    *,
    kl_threshold: float = 0.1,
    induce_threshold: float = 0.0,
    max_layer_fraction: float = 0.8,
) -> Selection:
    """Apply the filters and return the surviving candidate with the minimal bypass score.

    Raises `NoDirectionSelected` when no candidate survives.
    """
    layers = torch.tensor(scores.layers)[None, :].expand_as(scores.bypass)
    discarded_by = {
        "kl": ~(scores.kl <= kl_threshold),  # NaN counts as discarded
        "induce": ~(scores.induce >= induce_threshold),
        "layer": layers >= int(max_layer_fraction * n_layers),
        "not_finite": ~torch.isfinite(scores.bypass),
    }
    kept = ~torch.stack(list(discarded_by.values())).any(0)
    thresholds = {"kl": kl_threshold, "induce": induce_threshold, "max_layer_fraction": max_layer_fraction}
    if not bool(kept.any()):
        counts = ", ".join(f"{name}: {int(mask.sum())}" for name, mask in discarded_by.items())
        raise NoDirectionSelected(
            f"all {kept.numel()} candidate directions were filtered out (discarded by {counts}); loosen the "
            f"thresholds {thresholds} or inspect the score grid"
        )
    masked = torch.where(kept, scores.bypass, torch.full_like(scores.bypass, float("inf")))
    flat = int(masked.argmin())
    i, j = divmod(flat, masked.shape[1])
    return Selection(
        scores.positions[i],
        scores.layers[j],
        float(scores.bypass[i, j]),
        float(scores.induce[i, j]),
        float(scores.kl[i, j]),
        kept,
        discarded_by,
        thresholds,
    )


def select_direction_relaxed(
    scores: DirectionScores, n_layers: int, kl_thresholds: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)
) -> tuple[Selection, float]:
    """`select_direction` with the KL threshold relaxed step by step (the induce and layer filters kept) until a
    candidate survives; returns it and the threshold used. Raises `NoDirectionSelected` if none does.

    The fallback for models where no direction both induces refusal and leaves harmless outputs alone: the
    first relaxation that admits a candidate keeps Arditi's criteria and stays as close to them as possible.
    """
    error = None
    for threshold in kl_thresholds:
        try:
            return select_direction(scores, n_layers, kl_threshold=threshold), threshold
        except NoDirectionSelected as failure:
            error = failure
    raise NoDirectionSelected(f"even at KL <= {kl_thresholds[-1]}: {error}")


def filter_by_refusal_score(
    model: HookedTransformer,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    token_ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> tuple[list[str], list[str]]:
    """Arditi's prompt filter: keep harmful prompts with refusal log-odds > 0 and harmless ones < 0."""
    ids = refusal_token_ids(model) if token_ids is None else token_ids
    harmful_scores = refusal_log_odds(last_position_logits(model, harmful, batch_size=batch_size), ids)
    harmless_scores = refusal_log_odds(last_position_logits(model, harmless, batch_size=batch_size), ids)
    return (
        [p for p, s in zip(harmful, harmful_scores.tolist(), strict=True) if s > 0],
        [p for p, s in zip(harmless, harmless_scores.tolist(), strict=True) if s < 0],
    )


def score_directions(
    model: HookedTransformer,
    directions: DiffInMeans,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    token_ids: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> DirectionScores:
    """Bypass, induce and KL scores of every candidate in ``directions`` on chat-formatted validation
    prompts (one ablated pass over harmful + harmless prompts and one ActAdd pass per candidate)."""
    if not harmful or not harmless:
        raise ValueError("score_directions needs harmful and harmless validation prompts")
    ids = refusal_token_ids(model) if token_ids is None else list(token_ids)
    n_layers = model.cfg.n_layers
    reference = last_position_logits(model, harmless, batch_size=batch_size)
    shape = (len(directions.positions), len(directions.layers))
    bypass, induce, kl = torch.zeros(shape), torch.zeros(shape), torch.zeros(shape)
    both = list(harmful) + list(harmless)
    cells = [(i, j) for i in range(shape[0]) for j in range(shape[1])]
    for i, j in tqdm(cells, desc="score directions", disable=not progress):
        direction = directions.direction(directions.positions[i], directions.layers[j])
        if not bool(direction.norm() > 0):  # e.g. layer 0 at template tokens: identical embeddings
            bypass[i, j] = induce[i, j] = kl[i, j] = float("nan")
            continue
        ablated = last_position_logits(model, both, ablation_patches(direction, n_layers), batch_size=batch_size)
        bypass[i, j] = refusal_log_odds(ablated[: len(harmful)], ids).mean()
        kl[i, j] = next_token_kl(reference, ablated[len(harmful) :]).mean()
        steered = last_position_logits(
            model, harmless, actadd_patches(direction, directions.layers[j], 1.0), batch_size=batch_size
        )
        induce[i, j] = refusal_log_odds(steered, ids).mean()
    return DirectionScores(directions.positions, directions.layers, bypass, induce, kl)
