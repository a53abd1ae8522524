"""ActAdd and directional ablation as lists of `Patch`es (Arditi et al.'s ``hook_utils``)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from flowsteer.patching import AddVector, Patch, ProjectOut
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import Site, SiteKind

# Every block input, attention output and MLP output: what directional ablation edits.
ABLATION_KINDS: tuple[SiteKind, ...] = ("resid_pre", "attn_out", "mlp_out")


def ablation_patches(
    direction: Float[Tensor, " d_model"],
    n_layers: int,
    *,
    kinds: tuple[SiteKind, ...] = ABLATION_KINDS,
    positions: PositionSpec = "all",
) -> list[Patch]:
    """Directional ablation h ← h − (h·r̂) r̂ at ``kinds`` of every layer, so that no layer reads or
    writes the direction (r̂ = direction / ‖direction‖)."""
    ablate = ProjectOut(direction)
    return [Patch(Site(layer, kind), ablate, positions) for layer in range(n_layers) for kind in kinds]


def actadd_patches(
    direction: Float[Tensor, " d_model"],
    layer: int,
    coeff: float = 1.0,
    *,
    kind: SiteKind = "resid_pre",
    positions: PositionSpec = "all",
) -> list[Patch]:
    """Activation addition h ← h + coeff·r at one layer's ``kind`` (r unnormalised: coeff −1 removes the
    mean difference, +1 adds it)."""
    return [Patch(Site(layer, kind), AddVector(direction, coeff), positions)]
