"""Interventions: what a patch does to an activation.

An `Intervention` is an `nn.Module` called as ``intervention(activation, context)`` that returns a
new activation of the same shape. The `Context` says where and when it runs: the site, the real
token position of every column, the prompt lengths, the generation step and, in an interchange
experiment, the source run's activation at the same site. Trainable interventions (DAS rotations,
invertible maps) are ordinary modules whose parameters get gradients through the frozen model.

Built-ins cover the common edits; `Function` wraps any callable. Vectors and values are checked
to be finite when an intervention is built; an intervention's `width` (the activation width its
vector, direction, SAE or map needs) is checked against the activation where it first runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from flowsteer.sites import Site

Activation = Float[Tensor, "batch pos d"]


@dataclass(frozen=True)
class Context:
    """Where and when an intervention runs.

    Attributes:
        site: the site being edited.
        positions: real token index of each column, counted from the first real prompt token;
            -1 marks left padding. During generation with a KV cache a forward pass after the
            first sees one column per sequence, whose position is its prompt length + step - 1.
        prompt_lengths: number of real prompt tokens of each sequence.
        step: None outside generation; 0 for the prompt pass; k for the pass that feeds the k-th
            generated token.
        source: in an interchange, the source run's activation at this site, aligned with
            ``positions`` by distance from the end of the prompt; otherwise None.
        mask: the columns this patch edits (None means every column). Outside the mask the
            activation is restored after the intervention runs, so interventions may ignore it.
    """

    site: Site
    positions: Int[Tensor, "batch pos"]
    prompt_lengths: Int[Tensor, " batch"]
    step: int | None = None
    source: Activation | None = None
    mask: Bool[Tensor, "batch pos"] | None = None

    @property
    def is_padding(self) -> Bool[Tensor, "batch pos"]:
        return self.positions < 0

    @property
    def in_prompt(self) -> Bool[Tensor, "batch pos"]:
        return (self.positions >= 0) & (self.positions < self.prompt_lengths[:, None])

    @property
    def generated(self) -> Bool[Tensor, "batch pos"]:
        return self.positions >= self.prompt_lengths[:, None]

    def with_mask(self, mask: Bool[Tensor, "batch pos"] | None) -> Context:
        return replace(self, mask=mask)


class Intervention(nn.Module):
    """Base class: override ``forward(activation, context) -> activation`` (same shape).

    Override `width` when the intervention only fits activations of one width (last dimension).
    """

    @property
    def width(self) -> int | None:
        """The activation width this intervention needs; None when any width works."""
        return None

    def forward(self, activation: Activation, context: Context) -> Activation:
        raise NotImplementedError


def finite_tensor(value: Tensor | list[float], what: str) -> Tensor:
    """``value`` as a detached float tensor; ValueError naming ``what`` if it holds NaN or inf."""
    tensor = torch.as_tensor(value)
    if not tensor.is_floating_point():
        tensor = tensor.float()
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        first = tuple(bad.nonzero()[0].tolist())
        where = f" (first at index {first[0] if len(first) == 1 else first})" if first else ""
        raise ValueError(
            f"{what} holds {int(bad.sum())} NaN/inf values of {tensor.numel()}{where}, which would turn every "
            "activation it edits into NaN; recompute it (e.g. look for a division by a zero norm) or clean it "
            "with torch.nan_to_num"
        )
    return tensor.detach().clone()


def finite_number(value: float, what: str) -> float:
    """``value`` as a float; ValueError naming ``what`` if it is NaN or inf."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}; pass a finite number")
    return number


class AddVector(Intervention):
    """``h + scale * vector``: activation addition (ActAdd, feature steering)."""

    def __init__(self, vector: Float[Tensor, " d"], scale: float = 1.0):
        super().__init__()
        self.register_buffer("vector", finite_tensor(vector, "AddVector's vector"))
        self.scale = finite_number(scale, "AddVector's scale")

    @property
    def width(self) -> int:
        return self.vector.shape[-1]

    def forward(self, activation: Activation, context: Context) -> Activation:
        return activation + self.scale * self.vector.to(activation)

    def extra_repr(self) -> str:
        return f"d={self.vector.shape[-1]}, norm={self.vector.norm():.3g}, scale={self.scale}"


class Scale(Intervention):
    """``factor * h`` (``factor=0`` zero-ablates)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = finite_number(factor, "Scale's factor")

    def forward(self, activation: Activation, context: Context) -> Activation:
        return activation * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def orthonormal_rows(
    directions: Float[Tensor, "k d"] | Float[Tensor, " d"], what: str = "directions"
) -> Float[Tensor, "k d"]:
    """An orthonormal basis (rows) of the span of ``directions``, Gram-Schmidt order and signs kept.

    ``what`` names the directions in the error raised for NaN/inf or zero rows.
    """
    directions = finite_tensor(directions, what)
    if directions.ndim == 1:
        directions = directions[None]
    if (directions.norm(dim=-1) == 0).any():
        raise ValueError(f"{what} must be non-zero: a zero vector has no direction")
    basis, triangle = torch.linalg.qr(directions.double().T)
    basis = basis * torch.sign(torch.diagonal(triangle))  # row i points along directions[i]
    return basis.T.to(directions.dtype)


class ProjectOut(Intervention):
    """``h - (h·r̂) r̂``: directional ablation of one direction, or of the span of several (rows)."""

    def __init__(self, directions: Float[Tensor, "k d"] | Float[Tensor, " d"]):
        super().__init__()
        self.register_buffer("basis", orthonormal_rows(directions, "ProjectOut's directions"))

    @property
    def width(self) -> int:
        return self.basis.shape[-1]

    def forward(self, activation: Activation, context: Context) -> Activation:
        basis = self.basis.to(activation)
        return activation - (activation @ basis.T) @ basis

    def extra_repr(self) -> str:
        return f"rank={self.basis.shape[0]}, d={self.basis.shape[1]}"


class Clamp(Intervention):
    """Set the component of ``h`` along a unit direction to ``value``: ``h + (value - h·r̂) r̂``."""

    def __init__(self, direction: Float[Tensor, " d"], value: float):
        super().__init__()
        self.register_buffer("direction", orthonormal_rows(direction, "Clamp's direction")[0])
        self.value = finite_number(value, "Clamp's value")

    @property
    def width(self) -> int:
        return self.direction.shape[-1]

    def forward(self, activation: Activation, context: Context) -> Activation:
        direction = self.direction.to(activation)
        current = activation @ direction
        return activation + (self.value - current)[..., None] * direction

    def extra_repr(self) -> str:
        return f"value={self.value}"


class Replace(Intervention):
    """Replace ``h`` with a fixed value (broadcast over batch and positions, e.g. a mean activation)."""

    def __init__(self, value: Tensor):
        super().__init__()
        self.register_buffer("value", finite_tensor(value, "Replace's value"))

    @property
    def width(self) -> int | None:
        return self.value.shape[-1] if self.value.ndim else None

    def forward(self, activation: Activation, context: Context) -> Activation:
        return self.value.to(activation).expand_as(activation)


class FromSource(Intervention):
    """Interchange: take the source run's activation (optionally only within a subspace).

    With ``basis`` (orthonormal rows after QR) only the component in its span is exchanged:
    ``h + (s - h) B^T B``; without it the whole activation is.
    """

    def __init__(self, basis: Float[Tensor, "k d"] | None = None):
        super().__init__()
        self.register_buffer("basis", None if basis is None else orthonormal_rows(basis, "FromSource's basis"))

    @property
    def width(self) -> int | None:
        return None if self.basis is None else self.basis.shape[-1]

    def forward(self, activation: Activation, context: Context) -> Activation:
        if context.source is None:
            raise ValueError(
                f"FromSource at {context.site} needs a source activation: run it through "
                "flowsteer.patching.interchange(model, base, source, patches)"
            )
        source = context.source.to(activation)
        if self.basis is None:
            return source
        basis = self.basis.to(activation)
        return activation + ((source - activation) @ basis.T) @ basis


class Function(Intervention):
    """Any callable ``fn(activation, context) -> activation`` as an intervention."""

    def __init__(self, fn: Callable[[Activation, Context], Activation], name: str | None = None):
        super().__init__()
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def forward(self, activation: Activation, context: Context) -> Activation:
        return self.fn(activation, context)

    def extra_repr(self) -> str:
        return self.name


def as_intervention(value: Intervention | Callable[[Activation, Context], Activation]) -> Intervention:
    """Wrap a plain callable in `Function`; pass interventions through."""
    if isinstance(value, Intervention):
        return value
    if callable(value):
        return Function(value)
    raise TypeError(f"expected an Intervention or a callable(activation, context), got {type(value).__name__}")
