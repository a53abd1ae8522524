"""`Bijection`: an invertible map R^d -> R^d with a forward, an inverse and a log-determinant.

Modelled on zuko's transforms: each bijection is a small `nn.Module` with ``forward(x) -> z``,
``inverse(z) -> x`` and ``log_abs_det_jacobian(x)``; `Composition` chains them. Every bijection
acts on the last dimension and broadcasts over the leading ones. ``config()`` gives the JSON-able
constructor arguments and `build_bijection` rebuilds a bijection from them (its tensors travel
separately, in a safetensors state dict).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

_REGISTRY: dict[str, type[Bijection]] = {}


def register_bijection(cls: type[Bijection]) -> type[Bijection]:
    """Class decorator: make ``cls`` rebuildable from its ``config()`` by `build_bijection`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def build_bijection(config: dict[str, Any]) -> Bijection:
    """Rebuild a bijection (with fresh tensors) from ``config()`` output."""
    name = config.get("type")
    if name not in _REGISTRY:
        raise ValueError(f"unknown bijection type {name!r}; known types: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name].from_config(config)


class Bijection(nn.Module):
    """An invertible map on the last dimension (size ``d``)."""

    d: int

    def forward(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        raise NotImplementedError

    def inverse(self, z: Float[Tensor, "*batch d"]) -> Float[Tensor, "*batch d"]:
        raise NotImplementedError

    def log_abs_det_jacobian(self, x: Float[Tensor, "*batch d"]) -> Float[Tensor, " *batch"]:
        """log |det ∂f/∂x| at ``x``."""
        raise NotImplementedError

    def forward_and_log_det(self, x: Float[Tensor, "*batch d"]) -> tuple[Tensor, Tensor]:
        """``(f(x), log |det ∂f/∂x|)``; subclasses override when both come cheaper together."""
        return self.forward(x), self.log_abs_det_jacobian(x)

    def config(self) -> dict[str, Any]:
        """The constructor arguments as JSON-able values, with the class name under ``"type"``."""
        return {"type": type(self).__name__, "d": self.d}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Bijection:
        return cls(**{key: value for key, value in config.items() if key != "type"})

    def check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.d:
            raise ValueError(f"{type(self).__name__} maps vectors of size {self.d}, got shape {tuple(x.shape)}")


@register_bijection
class Identity(Bijection):
    """``f(x) = x``: with it the general intervention is plain coordinate patching."""

    def __init__(self, d: int):
        super().__init__()
        self.d = int(d)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x

    def inverse(self, z: Tensor) -> Tensor:
        self.check_input(z)
        return z

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])


@register_bijection
class Composition(Bijection):
    """``f = f_n ∘ ... ∘ f_1``: layers applied in order, inverted in reverse, log-dets summed."""

    def __init__(self, layers: Sequence[Bijection]):
        super().__init__()
        if not layers:
            raise ValueError("a Composition needs at least one bijection")
        sizes = {layer.d for layer in layers}
        if len(sizes) != 1:
            raise ValueError(f"all bijections in a Composition must share d; got sizes {sorted(sizes)}")
        self.layers = nn.ModuleList(layers)
        self.d = sizes.pop()

    def __iter__(self) -> Iterator[Bijection]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def forward_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[:-1])
        for layer in self.layers:
            x, ladj = layer.forward_and_log_det(x)
            total = total + ladj
        return x, total

    def log_abs_det_jacobian(self, x: Tensor) -> Tensor:
        return self.forward_and_log_det(x)[1]

    def config(self) -> dict[str, Any]:
        return {"type": "Composition", "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Composition:
        return cls([build_bijection(layer) for layer in config["layers"]])


def tensor_dtype(module: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter or buffer (``default`` if it has none)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return default


def leaves(bijection: Bijection) -> Iterator[Bijection]:
    """The non-composite bijections inside ``bijection``, in forward order."""
    if isinstance(bijection, Composition):
        for layer in bijection.layers:
            yield from leaves(layer)
    else:
        yield bijection


@torch.no_grad()
def data_init(bijection: Bijection, x: Float[Tensor, "n d"]) -> Bijection:
    """Initialise every data-dependent layer (e.g. `ActNorm`) from samples ``x``, in forward order.

    Each layer sees ``x`` as transformed by the layers before it, as in Glow's data-dependent
    initialisation. Layers without a ``data_init`` method pass the data through unchanged.
    """
    x = x.reshape(-1, x.shape[-1]).to(tensor_dtype(bijection, x.dtype))
    for layer in leaves(bijection):
        initialise: Callable[[Tensor], None] | None = getattr(layer, "data_init", None)
        if initialise is not None:
            initialise(x)
        x = layer(x)
    return bijection
