"""`InvertibleIntervention`: ``h' = f⁻¹((1 - m)⊙f(h) + m⊙z*)``, an `Intervention` of the patching API.

``f`` is any `Bijection`, ``m`` a `LatentMask` over its coordinates and ``z*`` a `LatentTarget`:
the source run's latent (interchange), a shift ``f(h) + α·δ``, or a constant. Special cases:

- ``f`` = `Identity`, interchange: coordinate patching (all coordinates: `FromSource`);
- ``f`` = `Orthogonal` rotation, interchange on k coordinates: distributed alignment search (DAS);
- shift on every coordinate with ``δ = mean f(pos) - mean f(neg)``: INNSteer's latent translation.

Only the edited, non-padding rows go through the map; the others are returned untouched.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from torch.nn.utils import parametrize

from flowsteer.invertible.bijection import Bijection, tensor_dtype
from flowsteer.invertible.iresnet import inverse_reports
from flowsteer.invertible.masks import CoordinateMask, LatentMask
from flowsteer.invertible.targets import FixedLatent, LatentTarget, Shift, SourceLatent
from flowsteer.patching.interventions import Activation, Context, Intervention


class InvertibleIntervention(Intervention):
    """Edit activations in the coordinates of an invertible map and map them back.

    Args:
        bijection: the map ``f`` (its parameters train through the frozen model).
        target: ``z*``; see `SourceLatent`, `Shift`, `FixedLatent`.
        mask: the latent coordinates replaced (default: all).

    An intervention holds no state between calls: a new strength or target is a new intervention (`with_target`,
    `with_alpha`), sharing the map. Trainers read the edited rows from an `EffectLog(differentiable=True)`.
    """

    def __init__(self, bijection: Bijection, target: LatentTarget, mask: LatentMask | None = None):
        super().__init__()
        mask = mask if mask is not None else CoordinateMask(bijection.d)
        for name, part in (("target", target), ("mask", mask)):
            if part.d != bijection.d:
                raise ValueError(f"{name} has d={part.d} but the map has d={bijection.d}")
        self.bijection, self.target, self.mask = bijection, target, mask

    @property
    def d(self) -> int:
        return self.bijection.d

    @property
    def width(self) -> int:
        return self.d

    @classmethod
    def interchange(cls, bijection: Bijection, mask: LatentMask | None = None) -> InvertibleIntervention:
        """``z* = f(h_source)`` on the masked coordinates."""
        return cls(bijection, SourceLatent(bijection.d), mask)

    @classmethod
    def shift(
        cls,
        bijection: Bijection,
        delta: Tensor | None = None,
        alpha: float = 1.0,
        mask: LatentMask | None = None,
        trainable: bool = False,
    ) -> InvertibleIntervention:
        """``z* = f(h) + α·δ`` (δ = 0 and trainable when not given)."""
        return cls(bijection, Shift(bijection.d, delta, alpha, trainable or delta is None), mask)

    def with_target(self, target: LatentTarget) -> InvertibleIntervention:
        """The same map and mask (shared, not copied) with another target, e.g. a `FixedLatent`
        of harmless prompts for generation after interchange training."""
        return InvertibleIntervention(self.bijection, target, self.mask)

    def with_alpha(self, alpha: float) -> InvertibleIntervention:
        """The same map, mask and shift direction with another strength α (a `Shift` target only)."""
        if not isinstance(self.target, Shift):
            raise TypeError(f"with_alpha needs a Shift target, this intervention has {type(self.target).__name__}")
        return self.with_target(self.target.with_alpha(alpha))

    def fixed_to_mean(self, activations: Float[Tensor, "n d"]) -> InvertibleIntervention:
        """`with_target` a `FixedLatent` at the mean of ``f`` over ``activations``."""
        return self.with_target(FixedLatent.mean_of(self.bijection, activations))

    def edit(
        self, h: Float[Tensor, "n d"], source: Float[Tensor, "n d"] | None = None
    ) -> Float[Tensor, "n d"]:
        """The intervention on rows: ``f⁻¹((1 - m)⊙f(h) + m⊙z*)``."""
        with parametrize.cached():  # one set of weights for f and f⁻¹, also in training mode
            z = self.bijection(h)
            source_z = self.bijection(source) if self.target.uses_source and source is not None else None
            z_star = self.target(z, source_z)
            m = self.mask().to(z)
            return self.bijection.inverse((1 - m) * z + m * z_star)

    def forward(self, activation: Activation, context: Context) -> Activation:
        rows = context.positions >= 0
        if context.mask is not None:
            rows = rows & context.mask
        if not bool(rows.any()):
            return activation
        dtype = tensor_dtype(self.bijection, activation.dtype)
        h = activation[rows].to(dtype)
        source = None
        if self.target.uses_source:
            if context.source is None:
                raise ValueError(
                    f"{type(self).__name__} at {context.site} interchanges with a source run: call it through "
                    "flowsteer.patching.interchange(model, base, source, patches), or use a FixedLatent target"
                )
            source = context.source[rows].to(dtype)
        edited = self.edit(h, source)
        out = activation.clone()
        out[rows] = edited.to(activation.dtype)
        return out

    @property
    def inverse_residual(self) -> float | None:
        """Largest relative fixed-point residual of the last inverse (None for exact maps)."""
        reports = inverse_reports(self.bijection)
        return max(report.residual for report in reports) if reports else None

    def extra_repr(self) -> str:
        return f"d={self.d}"


def latent_delta(bijection: Bijection, positive: Tensor, negative: Tensor) -> Tensor:
    """``mean f(positive) - mean f(negative)``: the latent translation from the negative class to the
    positive one (INNSteer's steering vector; with `Identity` the difference in means)."""
    dtype = tensor_dtype(bijection, positive.dtype)
    with torch.no_grad():
        return (bijection(positive.to(dtype)).mean(0) - bijection(negative.to(dtype)).mean(0)).float()
