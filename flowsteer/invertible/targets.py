"""Latent targets ``z*``: what the masked coordinates of ``f(h)`` become.

- `SourceLatent`: ``z* = f(h_source)``, the interchange intervention (the source run's activation).
- `Shift`: ``z* = f(h) + α·δ``, with δ set (a steering vector) or learned.
- `FixedLatent`: ``z* = c``, a constant (e.g. the mean latent of harmless prompts), usable without a
  source run, such as during generation.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from flowsteer.invertible.bijection import Bijection, tensor_dtype


class LatentTarget(nn.Module):
    """Base class: ``target(z, source_z) -> z*`` on rows ``[n, d]``."""

    d: int
    uses_source: bool = False

    def forward(self, z: Float[Tensor, "n d"], source_z: Float[Tensor, "n d"] | None) -> Float[Tensor, "n d"]:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "d": self.d}


class SourceLatent(LatentTarget):
    """``z* = f(h_source)``: needs the source activation (`flowsteer.patching.interchange`)."""

    uses_source = True

    def __init__(self, d: int):
        super().__init__()
        self.d = int(d)

    def forward(self, z: Tensor, source_z: Tensor | None) -> Tensor:
        if source_z is None:
            raise ValueError(
                "this intervention interchanges latents with a source run: call it through "
                "flowsteer.patching.interchange(model, base, source, patches), or give it a FixedLatent target"
            )
        return source_z


class Shift(LatentTarget):
    """``z* = z + α·δ``. ``trainable=True`` learns δ (a parameter); otherwise δ is a fixed buffer."""

    def __init__(self, d: int, delta: Tensor | None = None, alpha: float = 1.0, trainable: bool = False):
        super().__init__()
        self.d, self.alpha, self.trainable = int(d), float(alpha), bool(trainable)
        value = torch.zeros(self.d) if delta is None else torch.as_tensor(delta, dtype=torch.float32).detach().clone()
        if value.shape != (self.d,):
            raise ValueError(f"delta must have shape [{self.d}], got {tuple(value.shape)}")
        if self.trainable:
            self.delta = nn.Parameter(value)
        else:
            self.register_buffer("delta", value)

    def forward(self, z: Tensor, source_z: Tensor | None) -> Tensor:
        return z + self.alpha * self.delta.to(z)

    def with_alpha(self, alpha: float) -> Shift:
        """A fixed shift along the same δ (its current value) with strength ``alpha``."""
        return Shift(self.d, self.delta.detach(), alpha)

    def config(self) -> dict[str, Any]:
        return {"type": "Shift", "d": self.d, "alpha": self.alpha, "trainable": self.trainable}

    def extra_repr(self) -> str:
        return f"d={self.d}, alpha={self.alpha}, |delta|={float(self.delta.norm()):.3g}, trainable={self.trainable}"


class FixedLatent(LatentTarget):
    """``z* = value`` for every row."""

    def __init__(self, d: int, value: Tensor | None = None):
        super().__init__()
        self.d = int(d)
        value = torch.zeros(self.d) if value is None else torch.as_tensor(value, dtype=torch.float32).detach().clone()
        if value.shape != (self.d,):
            raise ValueError(f"value must have shape [{self.d}], got {tuple(value.shape)}")
        self.register_buffer("value", value)

    @classmethod
    @torch.no_grad()
    def mean_of(cls, bijection: Bijection, activations: Float[Tensor, "n d"]) -> FixedLatent:
        """The mean of ``f(h)`` over ``activations`` (e.g. harmless prompts at the patched positions)."""
        latents = bijection(activations.to(tensor_dtype(bijection, activations.dtype)))
        return cls(bijection.d, latents.mean(0).float())

    def forward(self, z: Tensor, source_z: Tensor | None) -> Tensor:
        return self.value.to(z).expand_as(z)


TARGETS: dict[str, type[LatentTarget]] = {
    "SourceLatent": SourceLatent,
    "Shift": Shift,
    "FixedLatent": FixedLatent,
}


def build_target(config: dict[str, Any]) -> LatentTarget:
    """Rebuild a target from ``config()`` (its tensors come from the state dict)."""
    kind = config.get("type")
    if kind not in TARGETS:
        raise ValueError(f"unknown latent target type {kind!r}; known: {', '.join(TARGETS)}")
    return TARGETS[kind](**{k: v for k, v in config.items() if k != "type"})
