"""What an intervention costs: next-token KL on harmless prompts and cross-entropy on plain text."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import EffectLog, Patch, run_with_patches
from flowsteer.patching.inputs import left_pad, tokenize


def next_token_kl(reference: Float[Tensor, "n vocab"], other: Float[Tensor, "n vocab"]) -> Float[Tensor, " n"]:
    """KL(reference ‖ other) of the next-token distributions, in nats, per row (Arditi's KL score uses
    reference = the unpatched model)."""
    if reference.shape != other.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    log_p, log_q = reference.double().log_softmax(-1), other.double().log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).float()


@torch.no_grad()
def cross_entropy(
    model: HookedTransformer,
    texts: Sequence[str],
    patches: Sequence[Patch] = (),
    *,
    batch_size: int = 8,
    record: EffectLog | None = None,
) -> dict[str, float]:
    """Token-weighted mean next-token cross-entropy (nats/token) of ``texts`` with ``patches`` applied,
    and its perplexity. Texts are used as they are (no chat template); every real token after the first
    is predicted. A text longer than the model's context is scored on its first ``n_ctx`` tokens."""
    if not texts:
        raise ValueError("cross_entropy needs at least one text")
    pad = model.tokenizer.pad_token_id or 0
    total, count = 0.0, 0
    for start in range(0, len(texts), batch_size):
        rows = [row[: model.cfg.n_ctx] for row in tokenize(model, list(texts[start : start + batch_size]))]
        batch = left_pad(rows, pad).to(model.cfg.device)
        logits = run_with_patches(model, batch, patches, record=record)
        log_probs = logits[:, :-1].double().log_softmax(-1)
        targets = batch.tokens[:, 1:]
        real = (batch.attention_mask[:, :-1] * batch.attention_mask[:, 1:]).bool()
        nll = -log_probs.gather(-1, targets[..., None])[..., 0]
        total += float(nll[real].sum())
        count += int(real.sum())
    mean = total / count
    return {"cross_entropy": mean, "perplexity": float(torch.tensor(mean).exp()), "tokens": count}
