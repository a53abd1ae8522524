"""Affine coupling (RealNVP) and fixed permutations: a flow whose inverse is exact in closed form."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from flowsteer.invertible.bijection import Bijection, register_bijection


@register_bijection
class AffineCoupling(Bijection):
    """Keep the first ``d // 2`` coordinates ``a``; map the rest: ``b' = b·exp(s(a)) + t(a)``.

    ``s`` and ``t`` come from one MLP ``d//2 -> hidden (-> hidden) -> 2·(d - d//2)`` (ReLU). The
    log-scale is soft-clamped, ``s = bound·tanh(raw / bound)``, so a step never scales a coordinate by
    more than ``e^bound``. The last layer starts at zero: a fresh coupling is the identity.
    Inverse: ``b = (b' - t(a))·exp(-s(a))``; log-det: ``Σ s``.
    """

    def __init__(self, d: int, hidden: int = 256, n_hidden: int = 2, scale_bound: float = 2.0):
        super().__init__()
        if d < 2:
            raise ValueError(f"an affine coupling needs d >= 2, got {d}")
        if n_hidden < 1 or hidden < 1:
            raise ValueError(f"hidden ({hidden}) and n_hidden ({n_hidden}) must be >= 1")
        self.d, self.hidden, self.n_hidden, self.scale_bound = int(d), int(hidden), int(n_hidden), float(scale_bound)
        self.split = self.d // 2
        layers: list[nn.Module] = []
        width = self.split
        for _ in range(self.n_hidden):
            layers += [nn.Linear(width, self.hidden), nn.ReLU()]
            width = self.hidden
        last = nn.Linear(width, 2 * (self.d - self.split))
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.conditioner = nn.Sequential(*layers, last)

    def _scale_shift(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        raw_scale, shift = self.conditioner(kept).chunk(2, dim=-1)
        return self.scale_bound * torch.tanh(raw_scale / self.scale_bound), shift

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        kept, moved = x[..., : self.split], x[..., self.split :]
        scale, shift = self._scale_shift(kept)
        return torch.cat([kept, moved * torch.exp(scale) + shift], dim=-1), scale.sum(-1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[0]

    def inverse(self, z: Tensor) -> Tensor:
        self.check_input(z)
        kept, moved = z[..., : self.split], z[..., self.split :]
        scale, shift = self._scale_shift(kept)
        return torch.cat([kept, (moved - shift) * torch.exp(-scale)], dim=-1)

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[1]

    def config(self) -> dict[str, Any]:
        return {
            "type": "AffineCoupling",
            "d": self.d,
            "hidden": self.hidden,
            "n_hidden": self.n_hidden,
            "scale_bound": self.scale_bound,
        }


@register_bijection
class Permutation(Bijection):
    """A fixed permutation of coordinates: random from ``seed``, reversed when ``seed`` is None, or
    the given ``order``; log-det 0.

    Placed between couplings so that every coordinate is transformed by some block.
    """

    def __init__(self, d: int, seed: int | None = 0, order: Int[Tensor, " d"] | None = None):
        super().__init__()
        self.d = int(d)
        self.seed = seed
        if order is None:
            if seed is None:
                order = torch.arange(self.d - 1, -1, -1)
            else:
                order = torch.randperm(self.d, generator=torch.Generator().manual_seed(int(seed)))
        order = torch.as_tensor(order, dtype=torch.long)
        if not torch.equal(order.sort().values, torch.arange(self.d)):
            raise ValueError(f"order must be a permutation of 0..{self.d - 1}")
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        self.check_input(x)
        return x[..., self.order]

    def inverse(self, z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        self.check_input(z)
        return z[..., self.inverse_order]

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"type": "Permutation", "d": self.d, "seed": self.seed}
