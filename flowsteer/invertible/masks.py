"""Masks over latent coordinates: which coordinates of ``f(h)`` an intervention replaces.

A mask returns weights ``m ∈ [0, 1]^d``; the intervention writes ``(1 - m)⊙f(h) + m⊙z*``.
`CoordinateMask` is a fixed 0/1 subset (exact); `SoftMask` learns ``m = σ(logits / temperature)``
(the Boundless-DAS idea) with a sparsity penalty, and `SoftMask.hard` freezes it into a subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn


class LatentMask(nn.Module):
    """Base class: ``mask()`` gives the weights ``m`` (shape ``[d]``)."""

    d: int

    def forward(self) -> Float[Tensor, " d"]:
        raise NotImplementedError

    def penalty(self) -> Tensor:
        """A sparsity penalty to add to training losses (0 for fixed masks)."""
        return torch.zeros(())

    def config(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "d": self.d}


class CoordinateMask(LatentMask):
    """A fixed subset of coordinates (``None``: all of them), as a 0/1 buffer."""

    def __init__(self, d: int, coordinates: Sequence[int] | Tensor | None = None):
        super().__init__()
        self.d = int(d)
        weights = torch.zeros(self.d)
        if coordinates is None:
            weights.fill_(1.0)
        else:
            index = torch.as_tensor(coordinates, dtype=torch.long).flatten()
            if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= self.d:
                raise ValueError(f"mask coordinates must be a non-empty subset of 0..{self.d - 1}, got {coordinates!r}")
            weights[index] = 1.0
        self.register_buffer("weights", weights)

    @classmethod
    def first(cls, d: int, k: int) -> CoordinateMask:
        """The first ``k`` coordinates (DAS's convention for a k-dimensional subspace)."""
        if not 1 <= k <= d:
            raise ValueError(f"k must be in 1..{d}, got {k}")
        return cls(d, range(k))

    @property
    def coordinates(self) -> list[int]:
        return self.weights.nonzero().flatten().tolist()

    def forward(self) -> Tensor:
        return self.weights

    def extra_repr(self) -> str:
        return f"d={self.d}, size={int(self.weights.sum())}"


class SoftMask(LatentMask):
    """Learned weights ``σ(logits / temperature)``; ``init`` is the starting logit of every coordinate."""

    def __init__(self, d: int, init: float = 0.0, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.d, self.temperature = int(d), float(temperature)
        self.logits = nn.Parameter(torch.full((self.d,), float(init)))

    def forward(self) -> Tensor:
        return torch.sigmoid(self.logits / self.temperature)

    def penalty(self) -> Tensor:
        """Mean weight: pushes the mask towards few coordinates."""
        return self().mean()

    def hard(self, threshold: float = 0.5) -> CoordinateMask:
        """The coordinates whose weight exceeds ``threshold``, as a fixed mask."""
        chosen = (self().detach() > threshold).nonzero().flatten()
        if chosen.numel() == 0:
            raise ValueError(f"no mask weight exceeds {threshold}; lower the threshold")
        return CoordinateMask(self.d, chosen)

    def config(self) -> dict[str, Any]:
        return {"type": "SoftMask", "d": self.d, "temperature": self.temperature}


MASKS: dict[str, type[LatentMask]] = {"CoordinateMask": CoordinateMask, "SoftMask": SoftMask}


def build_mask(config: dict[str, Any]) -> LatentMask:
    """Rebuild a mask from ``config()`` (its tensors come from the state dict)."""
    kind = config.get("type")
    if kind not in MASKS:
        raise ValueError(f"unknown mask type {kind!r}; known: {', '.join(MASKS)}")
    return MASKS[kind](**{k: v for k, v in config.items() if k != "type"})
