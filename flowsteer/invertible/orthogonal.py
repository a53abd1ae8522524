"""`Orthogonal`: a learned rotation, the linear special case of the general intervention (DAS)."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn.utils.parametrizations import orthogonal

from flowsteer.invertible.bijection import Bijection, register_bijection


@register_bijection
class Orthogonal(Bijection):
    """``z = R x`` with ``R`` orthogonal through torch's orthogonal parametrization; ``x = Rᵀ z``.

    With this map the intervention ``f⁻¹((1-m)⊙f(h) + m⊙f(s))`` is distributed alignment search
    (Geiger et al.): the first k rotated coordinates exchanged. ``weight`` sets an initial rotation
    (rows orthonormal); otherwise it is random. ``orthogonal_map`` is torch's choice of
    ``"matrix_exp"``, ``"cayley"`` or ``"householder"``.

    The rotation is parametrized and applied in float64 (results cast back to the input's dtype): a
    float32 ``matrix_exp`` is orthogonal only to ~1e-6, so ``Rᵀ`` would not quite invert ``R``.
    """

    def __init__(self, d: int, weight: Float[Tensor, "d d"] | None = None, orthogonal_map: str = "matrix_exp"):
        super().__init__()
        self.d = int(d)
        self.orthogonal_map = orthogonal_map
        linear = nn.Linear(self.d, self.d, bias=False, dtype=torch.float64)
        self.linear = orthogonal(linear, orthogonal_map=orthogonal_map)
        if weight is not None:
            self.set_rotation(weight)

    @torch.no_grad()
    def set_rotation(self, weight: Float[Tensor, "d d"]) -> None:
        """Make ``R = weight`` (it must be orthogonal)."""
        weight = torch.as_tensor(weight, dtype=self.linear.weight.dtype)
        if weight.shape != (self.d, self.d):
            raise ValueError(f"rotation must be {self.d}x{self.d}, got {tuple(weight.shape)}")
        eye = torch.eye(self.d, dtype=torch.float64)
        error = float((weight.double() @ weight.double().T - eye).abs().max())
        if error > 1e-4:
            raise ValueError(f"weight is not orthogonal (max |R Rᵀ - I| = {error:.2e}); orthonormalise its rows first")
        self.linear.weight = weight

    @property
    def rotation(self) -> Float[Tensor, "d d"]:
        """The current ``R`` (rows are the rotated coordinates' directions)."""
        return self.linear.weight

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        rotation = self.rotation
        return (x.to(rotation.dtype) @ rotation.T).to(x.dtype)

    def inverse(self, z: Tensor) -> Tensor:
        self.check_input(z)
        rotation = self.rotation
        return (z.to(rotation.dtype) @ rotation).to(z.dtype)

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])

    def config(self) -> dict[str, Any]:
        return {"type": "Orthogonal", "d": self.d, "orthogonal_map": self.orthogonal_map}
