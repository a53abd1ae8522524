"""Fluency of generated continuations: perplexity under an unsteered model, and repetition."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import cache_sites
from flowsteer.patching.generate import unembed
from flowsteer.patching.inputs import left_pad, tokenize
from flowsteer.sites import Site


@torch.no_grad()
def continuation_nll(
    model: HookedTransformer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Summed negative log-likelihood of each continuation (token ids) given its prompt under the
    unpatched model, and its number of tokens (0 for an empty continuation, whose NLL is 0)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    prompt_tokens = tokenize(model, list(prompts))
    last = Site(model.cfg.n_layers - 1)
    pad = model.tokenizer.pad_token_id or 0
    nll = torch.zeros(len(prompts))
    counts = torch.tensor([len(c) for c in continuations], dtype=torch.long)
    for start in range(0, len(prompts), batch_size):
        lengths = counts[start : start + batch_size]
        longest = int(lengths.max())
        if longest == 0:
            continue
        chunk = zip(prompt_tokens[start : start + batch_size], continuations[start : start + batch_size], strict=True)
        rows = [torch.cat([p, torch.as_tensor(list(c), dtype=torch.long)]) for p, c in chunk]
        batch = left_pad(rows, pad).to(model.cfg.device)
        # Only the positions that predict continuation tokens go through the unembedding.
        residual = cache_sites(model, batch, [last])[last][:, -longest - 1 : -1]
        logprobs = unembed(model, residual).float().log_softmax(-1)
        picked = logprobs.gather(-1, batch.tokens[:, -longest:, None])[..., 0].cpu()
        for i, n in enumerate(lengths.tolist()):
            nll[start + i] = -picked[i, longest - n :].sum()
    return nll, counts


def perplexity(
    model: HookedTransformer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> Float[Tensor, " n"]:
    """Perplexity of each continuation (token ids) given its prompt, under the unpatched model.

    Empty continuations get ``inf``.
    """
    nll, counts = continuation_nll(model, prompts, continuations, batch_size)
    return torch.where(counts > 0, (nll / counts.clamp(min=1)).exp(), torch.full_like(nll, float("inf")))


def continuation_perplexity(
    model: HookedTransformer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> dict[str, float]:
    """Pooled perplexity of continuations given their prompts, under the unpatched model.

    Returns ``perplexity`` (exp of the mean NLL over all continuation tokens), ``median_perplexity``
    (over sequences) and ``tokens``. Empty continuations are skipped.
    """
    nll, counts = continuation_nll(model, prompts, continuations, batch_size)
    used = counts > 0
    if not bool(used.any()):
        return {"perplexity": float("nan"), "median_perplexity": float("nan"), "tokens": 0}
    return {
        "perplexity": math.exp(float(nll[used].sum()) / int(counts[used].sum())),
        "median_perplexity": float((nll[used] / counts[used]).exp().median()),
        "tokens": int(counts.sum()),
    }


def repetition_rate(texts: Sequence[str], n: int = 3) -> float:
    """Mean over texts of the share of word n-grams that repeat an earlier n-gram of the same text."""
    rates = []
    for text in texts:
        words = re.findall(r"\w+", text.lower())
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    return sum(rates) / len(rates) if rates else 0.0
