"""The logit lens on a direction: which tokens it promotes when written into the residual stream, read through the
final norm's gain (and centring, for LayerNorm models) and the unembedding ``W_U``. The norm's 1/rms factor is the
same for every token, so it does not change the ranking."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.models.tl import unembedding


@torch.no_grad()
def logit_lens(
    model: HookedTransformer, directions: Float[Tensor, "n d_model"], k: int, chunk: int = 256
) -> tuple[Int[Tensor, "n k"], Float[Tensor, "n k"]]:
    """The ``k`` token ids each direction promotes most, and their logits (float32, on the CPU)."""
    if directions.ndim != 2 or directions.shape[-1] != model.cfg.d_model:
        raise ValueError(f"directions must be [n, d_model={model.cfg.d_model}], got {tuple(directions.shape)}")
    tail = unembedding(model)
    ids, values = [], []
    for block in directions.float().split(chunk):
        block = block.to(tail.W_U.device)
        if tail.centres:
            block = block - block.mean(-1, keepdim=True)
        if tail.gain is not None:
            block = block * tail.gain
        value, index = (block @ tail.W_U).topk(k, dim=-1)
        ids.append(index.cpu())
        values.append(value.cpu())
    return torch.cat(ids).int(), torch.cat(values)
