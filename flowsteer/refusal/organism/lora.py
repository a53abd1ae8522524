"""Low-rank adapters (LoRA, Hu et al. 2021) on a Hugging Face causal LM's linear layers.

`add_adapters` wraps the chosen ``nn.Linear`` modules in `LoRALinear` (``y = x Wᵀ + s · (x Aᵀ) Bᵀ``, ``W`` frozen,
``B = 0`` at the start so training starts from the base model); `adapter_tensors` reads the trained ``A``/``B``
by module name; `merge_adapters` folds them into the weights (``W ← W + s · B A``) and puts the plain linear
layers back; `apply_adapter_tensors` does the same from saved tensors, which is how a shipped adapter turns
the base model into the organism without training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

# Every attention and MLP projection of a Llama-style block (Hugging Face names).
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Adapters are kept (and shipped) in bfloat16: half the size, and the merged weights are made from exactly
# these rounded tensors whether they come from training or from a file.
STORAGE_DTYPE = torch.bfloat16


class AdapterError(ValueError):
    """Adapter tensors that do not fit the model they are applied to."""


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        a = torch.empty(rank, base.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # nn.Linear's own initialisation
        self.A = nn.Parameter(a.to(base.weight))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank).to(base.weight))

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        return self.base(x) + self.scale * ((x @ self.A.T.to(x.dtype)) @ self.B.T.to(x.dtype))

    def delta(self) -> Float[Tensor, "d_out d_in"]:
        return self.scale * (self.B @ self.A)


def _targets(model: nn.Module, targets: Sequence[str]) -> list[tuple[str, nn.Module, str, nn.Linear]]:
    """(full name, parent, attribute, linear) for every linear layer whose name ends in one of ``targets``."""
    found = []
    for name, module in model.named_modules():
        for attribute, child in module.named_children():
            if attribute in targets and isinstance(child, nn.Linear):
                found.append((f"{name}.{attribute}" if name else attribute, module, attribute, child))
    if not found:
        raise AdapterError(f"the model has no linear layers named {', '.join(targets)}")
    return found


def add_adapters(
    model: nn.Module, rank: int, alpha: float, *, targets: Sequence[str] = TARGET_MODULES, seed: int = 0
) -> list[nn.Parameter]:
    """Freeze ``model`` and wrap its ``targets`` linear layers in `LoRALinear`; return the adapter parameters."""
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    parameters: list[nn.Parameter] = []
    for _, parent, attribute, linear in _targets(model, targets):
        adapter = LoRALinear(linear, rank, alpha, generator)
        setattr(parent, attribute, adapter)
        parameters += [adapter.A, adapter.B]
    return parameters


def _adapted(model: nn.Module) -> list[tuple[str, nn.Module, str, LoRALinear]]:
    found = []
    for name, module in model.named_modules():
        for attribute, child in module.named_children():
            if isinstance(child, LoRALinear):
                found.append((f"{name}.{attribute}" if name else attribute, module, attribute, child))
    return found


def adapter_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The trained ``A`` and ``B`` of every adapter in `STORAGE_DTYPE`, keyed ``"<module>.lora_A"`` /
    ``"<module>.lora_B"`` (the scale is not in the tensors: `apply_adapter_tensors` takes it)."""
    tensors = {}
    for name, _, _, adapter in _adapted(model):
        tensors[f"{name}.lora_A"] = adapter.A.detach().to("cpu", STORAGE_DTYPE).contiguous()
        tensors[f"{name}.lora_B"] = adapter.B.detach().to("cpu", STORAGE_DTYPE).contiguous()
    return tensors


def merge_adapters(model: nn.Module) -> dict[str, Tensor]:
    """Put the plain ``nn.Linear`` layers back with every adapter folded into its weight, in place; return the
    adapter tensors. The fold is `apply_adapter_tensors`, so a model rebuilt from saved tensors is identical."""
    adapted = _adapted(model)
    if not adapted:
        raise AdapterError("the model has no adapters to merge (add_adapters first)")
    tensors, scale = adapter_tensors(model), adapted[0][3].scale
    for _, parent, attribute, adapter in adapted:
        setattr(parent, attribute, adapter.base)
    apply_adapter_tensors(model, tensors, scale)
    return tensors


@torch.no_grad()
def apply_adapter_tensors(model: nn.Module, tensors: Mapping[str, Tensor], scale: float) -> int:
    """``W ← W + scale · B A`` for every adapter pair in ``tensors`` (`adapter_tensors`' keys); returns how many
    layers changed. Every pair must name an existing linear layer of matching shape."""
    modules = dict(model.named_modules())
    names = sorted({key.rsplit(".", 1)[0] for key in tensors})
    for name in names:
        a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
        linear = modules.get(name)
        if a is None or b is None:
            raise AdapterError(f"adapter for {name} lacks {'lora_A' if a is None else 'lora_B'}")
        if not isinstance(linear, nn.Linear):
            raise AdapterError(f"the adapter names {name}, which is not a linear layer of this model")
        if (b.shape[0], a.shape[1]) != tuple(linear.weight.shape) or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"adapter for {name} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not fit its weight "
                f"{tuple(linear.weight.shape)}: the adapter belongs to another model"
            )
        linear.weight += (scale * (b.double() @ a.double())).to(linear.weight)  # the sum, then one rounding
    return len(names)
