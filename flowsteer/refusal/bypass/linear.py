"""Linear refusal-bypass methods (Arditi et al. 2024): the difference-in-means direction ``r`` chosen by
`flowsteer.refusal.selection` on the layers asked for; ActAdd ``h - r`` at its layer on every token; directional
ablation of ``r̂`` at every layer. Each fitted method is a `Steering`: patches usable in generation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import Patch
from flowsteer.refusal.bypass.data import BypassPrompts
from flowsteer.refusal.selection import (
    DirectionScores,
    NoDirectionSelected,
    score_directions,
    select_direction,
    select_direction_relaxed,
)
from flowsteer.steering.contrast import DiffInMeans, ablation_patches, actadd_patches, diff_in_means


@dataclass
class Steering:
    """A fitted method: its patches (usable in generation) and what fitting it found."""

    name: str
    patches: list[Patch]
    details: dict = field(default_factory=dict)


@dataclass
class LinearDirection:
    """The difference-in-means direction used by every method, and how it was chosen."""

    direction: Float[Tensor, " d_model"]
    layer: int
    position: int
    selection: dict


def linear_direction(
    model: HookedTransformer,
    prompts: BypassPrompts,
    layers: Sequence[int],
    *,
    scores: DirectionScores | None = None,
    batch_size: int = 16,
) -> LinearDirection:
    """Difference-in-means candidates at every post-instruction position of ``layers`` (from the training
    prompts), scored and filtered by Arditi's procedure on the validation prompts (``scores``: a grid scored
    before, over the same positions and ``layers``, is reused). If every candidate is filtered out, the KL
    threshold is relaxed step by step (`select_direction_relaxed`); if that fails too, the candidate with the
    lowest bypass score is taken. The report says which rule chose."""
    means: DiffInMeans = diff_in_means(
        model, prompts.harmful_train, prompts.harmless_train, layers=list(layers), batch_size=batch_size
    )
    if scores is None:
        scores = score_directions(model, means, prompts.harmful_val, prompts.harmless_val, batch_size=batch_size)
    elif (tuple(scores.positions), tuple(scores.layers)) != (tuple(means.positions), tuple(means.layers)):
        raise ValueError(
            f"the given scores cover positions {scores.positions} x layers {scores.layers}, not "
            f"{means.positions} x {means.layers}; score again (scores=None)"
        )
    try:
        chosen = select_direction(scores, model.cfg.n_layers)
        report = chosen.to_dict() | {"rule": "Arditi's filters"}
    except NoDirectionSelected as error:
        try:
            chosen, threshold = select_direction_relaxed(scores, model.cfg.n_layers)
            report = chosen.to_dict() | {"rule": f"KL threshold relaxed to {threshold}", "fallback": str(error)}
        except NoDirectionSelected as relaxed_error:
            bypass = torch.where(
                torch.isfinite(scores.bypass), scores.bypass, torch.full_like(scores.bypass, float("inf"))
            )
            i, j = divmod(int(bypass.argmin()), bypass.shape[1])
            report = {
                "position": scores.positions[i],
                "layer": scores.layers[j],
                "rule": "lowest bypass score",
                "fallback": str(relaxed_error),
            }
    report.pop("kept_mask", None)
    position, layer = report["position"], report["layer"]
    report["layers_scored"] = list(layers)
    report["scores"] = scores.to_dict()
    return LinearDirection(means.direction(position, layer), layer, position, report)


def actadd(direction: LinearDirection, layer: int | None = None, strength: float = 1.0) -> Steering:
    """ActAdd ``h ← h - strength·r`` at ``layer`` (default the direction's), every token."""
    layer = direction.layer if layer is None else layer
    patches = actadd_patches(direction.direction, layer, -strength)
    return Steering("actadd", patches, {"layer": layer, "coeff": -strength})


def directional_ablation(direction: LinearDirection, n_layers: int) -> Steering:
    """Directional ablation of ``r̂`` at every layer's resid_pre, attn_out and mlp_out, every token."""
    return Steering("directional_ablation", ablation_patches(direction.direction, n_layers), {"layers": n_layers})


