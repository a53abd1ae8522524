"""Steering at matched size: how much an intervention changes the residual stream per token, and an ActAdd vector
scaled to change it by as much as another method does.

The size is Σ over the patches of ‖Δh‖ at each token, averaged over tokens (`flowsteer.evals.magnitude`'s
``delta_norm_per_token``). For additions it does not depend on the input (every token gets ``scale · vector``
at every patched site), so `added_norm` reads it from the patches; `measured_norm` measures any patches on real
prompts with an `EffectLog`, which is how a test checks that a match really holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.evals.magnitude import per_token_delta_norms
from flowsteer.patching import AddVector, EffectLog, Patch, run_with_patches
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import Site


def added_norm(patches: Sequence[Patch]) -> float:
    """Σ ‖scale · vector‖ over ``patches``, all `AddVector` at every token: the ‖Δh‖ each token receives."""
    total = 0.0
    for patch in patches:
        if not isinstance(patch.intervention, AddVector):
            raise TypeError(f"{patch.site} is patched by {type(patch.intervention).__name__}; added_norm reads "
                            "additions only (measure other patches with measured_norm)")
        total += abs(patch.intervention.scale) * float(patch.intervention.vector.float().norm())
    return total


@torch.no_grad()
def measured_norm(model: HookedTransformer, prompts: Sequence[str], patches: Sequence[Patch]) -> float:
    """Mean over the prompts' tokens of Σ over ``patches`` of ‖Δh‖, measured in one patched forward pass (padding
    excluded). 0 without patches."""
    if not patches:
        return 0.0
    log = EffectLog()
    run_with_patches(model, list(prompts), list(patches), record=log)
    return float(per_token_delta_norms(log).mean())  # the log holds real (non-padding) tokens only


def matched_actadd(
    vector: Float[Tensor, " d_model"],
    site: Site | str,
    target_norm: float,
    *,
    positions: PositionSpec = "all",
) -> list[Patch]:
    """ActAdd of ``vector``'s direction at ``site`` on every token, scaled so that each token gets ‖Δh‖ =
    ``target_norm`` (the size another method's edit has)."""
    norm = float(vector.float().norm())
    if norm == 0 or not torch.isfinite(vector).all():
        raise ValueError("the ActAdd vector is zero or not finite; it has no direction to scale")
    if target_norm < 0:
        raise ValueError(f"target_norm must be >= 0, got {target_norm}")
    site = Site.parse(site) if isinstance(site, str) else site
    return [Patch(site, AddVector(vector.detach().float(), target_norm / norm), positions)]
