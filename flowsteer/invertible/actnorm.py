"""`ActNorm`: a per-coordinate affine map initialised from activation statistics (Glow)."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from flowsteer.invertible.bijection import Bijection, register_bijection


@register_bijection
class ActNorm(Bijection):
    """``z = (x - loc) · exp(-log_scale)``, one ``loc`` and ``log_scale`` per coordinate.

    `data_init` sets ``loc`` to the mean and ``exp(log_scale)`` to the standard deviation of sample
    activations, so the map starts by standardising them; both stay trainable (``trainable=False``
    freezes them as a fixed whitening). Until then the map is the identity.
    """

    def __init__(self, d: int, trainable: bool = True, eps: float = 1e-6):
        super().__init__()
        self.d = int(d)
        self.trainable = bool(trainable)
        self.eps = float(eps)
        self.loc = nn.Parameter(torch.zeros(self.d), requires_grad=self.trainable)
        self.log_scale = nn.Parameter(torch.zeros(self.d), requires_grad=self.trainable)
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def data_init(self, x: Float[Tensor, "n d"]) -> None:
        """Standardise ``x``: loc = mean, scale = std (floored at ``eps`` x the mean std)."""
        self.check_input(x)
        x = x.reshape(-1, self.d).to(self.loc.dtype)
        if x.shape[0] < 2:
            raise ValueError(f"ActNorm.data_init needs at least 2 samples to estimate a spread, got {x.shape[0]}")
        std = x.std(0)
        std = std.clamp_min(self.eps * float(std.mean()) + torch.finfo(std.dtype).tiny)
        self.loc.copy_(x.mean(0))
        self.log_scale.copy_(std.log())
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return (x - self.loc) * torch.exp(-self.log_scale)

    def inverse(self, z: Tensor) -> Tensor:
        self.check_input(z)
        return z * torch.exp(self.log_scale) + self.loc

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return (-self.log_scale.sum()).expand(x.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"type": "ActNorm", "d": self.d, "trainable": self.trainable, "eps": self.eps}

    def extra_repr(self) -> str:
        return f"d={self.d}, initialized={bool(self.initialized)}, trainable={self.trainable}"
