"""What an intervention costs: next-token KL on harmless prompts and cross-entropy on plain text, both built on
`token_nll`, the one definition of per-token next-token cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import EffectLog, Patch, TokenBatch, run_with_patches
from flowsteer.patching.inputs import left_pad, tokenize


def token_nll(
    logits: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token negative log-likelihood (nats, float64) of ``tokens[:, 1:]`` under ``logits[:, :-1]``; with an
    ``attention_mask``, predictions whose token or predecessor is padding are 0 (`real_predictions`)."""
    log_probs = logits[:, :-1].double().log_softmax(-1)
    nll = -log_probs.gather(-1, tokens[:, 1:, None].to(log_probs.device))[..., 0]
    return nll if attention_mask is None else nll * real_predictions(attention_mask).to(nll.device)


def real_predictions(attention_mask: Int[Tensor, "batch pos"]) -> Bool[Tensor, "batch pos_minus_1"]:
    """Which next-token predictions (column t predicts token t+1) have a real token and a real predecessor."""
    return (attention_mask[:, :-1] * attention_mask[:, 1:]).bool()


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

    def summed(logits: Tensor, piece: TokenBatch) -> Float[Tensor, "batch 2"]:
        nll = token_nll(logits, piece.tokens, piece.attention_mask)
        return torch.stack([nll.sum(1), real_predictions(piece.attention_mask).sum(1).double()], 1)

    rows = [row[: model.cfg.n_ctx] for row in tokenize(model, list(texts))]
    batch = left_pad(rows, model.tokenizer.pad_token_id or 0)
    totals = run_with_patches(model, batch, patches, record=record, batch_size=batch_size, reduce=summed).sum(0)
    total, count = float(totals[0]), int(totals[1])
    mean = total / count
    return {"cross_entropy": mean, "perplexity": float(torch.tensor(mean).exp()), "tokens": count}
