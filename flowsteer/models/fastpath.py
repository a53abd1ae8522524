"""Storing weights in the memory layout TransformerLens's forward pass consumes.

TransformerLens 3.9 re-lays out weights on every forward call: ``W.T.contiguous()`` in the gated MLP
and the unembedding (the 576 x 49152 unembedding alone is 113 MB per generated token), an
``einops.rearrange`` copy of W_Q/W_K/W_V into ``(head d_head) d_model`` and of W_O into
``d_model (head d_head)``. Generation spends over half its time in those copies.

`use_forward_layouts` stores each such parameter as a permuted view of a buffer that already has the
consumed layout (the layout Hugging Face's ``nn.Linear`` uses). Shapes, values, names and parameter
objects are unchanged; the forward pass's ``permute`` then yields a contiguous tensor, so
``.contiguous()`` and ``reshape`` no longer copy. The matmuls see the very same memory layouts as
before, so outputs are bit-identical. There is no cache to invalidate: edits to a weight (in place,
by ``load_state_dict`` or by assigning a new parameter) stay correct; a newly assigned parameter is
merely copied per call again, as in stock TransformerLens, until this function runs again.
"""

from __future__ import annotations

from torch import nn
from transformer_lens import HookedTransformer
from transformer_lens.components import Attention, GroupedQueryAttention, Unembed
from transformer_lens.components.mlps.gated_mlp import GatedMLP

_TRANSPOSE = (1, 0)
_QKV = (0, 2, 1)  # [head, d_model, d_head] consumed as [(head d_head), d_model]
_OUT = (2, 0, 1)  # [head, d_head, d_model] consumed as [d_model, (head d_head)]

# Per module type: parameter name -> the permutation its forward pass applies before reshaping.
FORWARD_PERMUTATIONS: dict[type[nn.Module], dict[str, tuple[int, ...]]] = {
    GatedMLP: {"W_gate": _TRANSPOSE, "W_in": _TRANSPOSE, "W_out": _TRANSPOSE},
    Unembed: {"W_U": _TRANSPOSE},
    Attention: {"W_Q": _QKV, "W_K": _QKV, "W_V": _QKV, "W_O": _OUT},
    GroupedQueryAttention: {"W_Q": _QKV, "_W_K": _QKV, "_W_V": _QKV, "W_O": _OUT},
}


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(permutation)), key=permutation.__getitem__))


def use_forward_layouts(model: HookedTransformer) -> HookedTransformer:
    """Re-lay out ``model``'s weights in place so the forward pass makes no weight copies."""
    for module in model.modules():
        for name, permutation in FORWARD_PERMUTATIONS.get(type(module), {}).items():
            param = module._parameters.get(name)
            if param is None or param.ndim != len(permutation):
                continue
            consumed = param.detach().permute(permutation).contiguous()
            param.data = consumed.permute(_inverse(permutation))
    return model


def uses_forward_layouts(model: HookedTransformer) -> bool:
    """True when every re-layable weight of ``model`` already has the consumed layout."""
    for module in model.modules():
        for name, permutation in FORWARD_PERMUTATIONS.get(type(module), {}).items():
            param = module._parameters.get(name)
            if param is not None and not param.permute(permutation).is_contiguous():
                return False
    return True
