"""Next-token logits at the last prompt position, batched, with patches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import EffectLog, Patch, run_with_patches


@torch.no_grad()
def last_position_logits(
    model: HookedTransformer,
    prompts: Sequence[str],
    patches: Sequence[Patch] = (),
    *,
    batch_size: int = 16,
    record: EffectLog | None = None,
) -> Float[Tensor, "n vocab"]:
    """Logits for the token after each prompt (prompts are left-padded, so it is the last column)."""
    if not prompts:
        raise ValueError("no prompts given")
    logits = run_with_patches(model, list(prompts), patches, record=record, batch_size=batch_size, last_position=True)
    return logits.float().cpu()
