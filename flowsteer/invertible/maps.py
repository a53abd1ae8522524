"""Ready-made invertible maps: identity, rotation (DAS), i-ResNet and affine-coupling flows.

Each factory returns a `Bijection`, seeded so that the same arguments give the same map, with its
parameters in ``dtype`` (float64 by default: an intervention computes in its map's dtype, so the
round trip ``f⁻¹(f(h))`` of a float32 activation comes back exact or within a few float32 ulps, and
``δ = 0`` leaves the model's logits unchanged; pass ``torch.float32`` for speed). Maps with an
`ActNorm` layer should be initialised from activations with `data_init` before use (the training
functions do it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from flowsteer.invertible.actnorm import ActNorm
from flowsteer.invertible.bijection import Bijection, Composition, Identity, data_init
from flowsteer.invertible.coupling import AffineCoupling, Permutation
from flowsteer.invertible.iresnet import IResBlock
from flowsteer.invertible.orthogonal import Orthogonal


def _seeded(seed: int, build: Callable[[], Bijection], dtype: torch.dtype) -> Bijection:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(dtype)


def identity_map(d: int) -> Bijection:
    """``f(x) = x``: the general intervention becomes coordinate patching."""
    return Identity(d)


def orthogonal_map(d: int, weight: torch.Tensor | None = None, seed: int = 0) -> Bijection:
    """A rotation ``z = R x`` (random from ``seed`` unless ``weight`` is given): DAS. Always float64
    inside (see `Orthogonal`)."""
    return _seeded(seed, lambda: Orthogonal(d, weight), torch.float64)


def iresnet_map(
    d: int,
    n_blocks: int = 2,
    hidden: int | None = None,
    coeff: float = 0.9,
    activation: str = "elu",
    actnorm: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    **block: Any,
) -> Bijection:
    """``ActNorm`` (data-initialised standardisation) then ``n_blocks`` i-ResNet blocks.

    ``block`` passes further `IResBlock` arguments (``n_hidden``, ``tol``, ``max_iter``, ...).
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")

    def build() -> Bijection:
        layers: list[Bijection] = [ActNorm(d)] if actnorm else []
        layers += [IResBlock(d, hidden, coeff=coeff, activation=activation, **block) for _ in range(n_blocks)]
        return Composition(layers)

    return _seeded(seed, build, dtype)


def coupling_flow(
    d: int,
    n_blocks: int = 4,
    hidden: int = 256,
    n_hidden: int = 2,
    scale_bound: float = 2.0,
    actnorm: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Bijection:
    """``ActNorm`` then ``n_blocks`` x (`AffineCoupling`, fixed random `Permutation`): RealNVP-style,
    exactly invertible (the INNSteer reading of papers.md 3.2/3.4)."""
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")

    def build() -> Bijection:
        layers: list[Bijection] = [ActNorm(d)] if actnorm else []
        for i in range(n_blocks):
            layers += [AffineCoupling(d, hidden, n_hidden, scale_bound), Permutation(d, seed=seed * 1000 + i)]
        return Composition(layers)

    return _seeded(seed, build, dtype)


def rotation_from(direction: Float[Tensor, " d"], seed: int = 0) -> Float[Tensor, "d d"]:
    """An orthogonal matrix (float64) whose first row is ``direction / ||direction||`` (the rest seeded-random)."""
    if not bool(direction.norm() > 0):
        raise ValueError(
            "cannot start a rotation along a zero direction (e.g. layer 0 at template tokens); pick a layer"
        )
    d = direction.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    basis = torch.cat([direction.double()[:, None], torch.randn(d, d - 1, generator=generator, dtype=torch.float64)], 1)
    q, r = torch.linalg.qr(basis)
    q = q * torch.sign(torch.diagonal(r))  # first column along +direction
    return q.T.contiguous()


def das_map(direction: Float[Tensor, " d"], seed: int = 0) -> Bijection:
    """DAS started at a linear direction: a rotation whose first coordinate is the projection on ``direction``."""
    return orthogonal_map(direction.shape[-1], rotation_from(direction, seed))


def aligned_iresnet_map(
    direction: Float[Tensor, " d"],
    activations: Float[Tensor, "n d"],
    n_blocks: int = 2,
    coeff: float = 0.9,
    seed: int = 0,
) -> Bijection:
    """ActNorm (initialised from ``activations``) -> a rotation whose first coordinate lies along ``direction`` on the
    standardised scale -> ``n_blocks`` i-ResNet blocks, float64: an i-ResNet map that starts at the DAS reading of a
    linear direction."""
    d = direction.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actnorm = ActNorm(d).double()
        data_init(actnorm, activations)
        standardised = direction.double() * actnorm.log_scale.detach().exp()  # <r, h - loc> in z coordinates
        blocks = [IResBlock(d, coeff=coeff).double() for _ in range(n_blocks)]
    return Composition([actnorm, Orthogonal(d, rotation_from(standardised, seed)), *blocks])


MAP_KINDS: dict[str, Callable[..., Bijection]] = {
    "identity": identity_map,
    "orthogonal": orthogonal_map,
    "iresnet": iresnet_map,
    "coupling": coupling_flow,
}


def build_map(kind: str, d: int, **kwargs: Any) -> Bijection:
    """One of `MAP_KINDS` by name (for command lines and configs)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"unknown map kind {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    return MAP_KINDS[kind](d, **kwargs)
