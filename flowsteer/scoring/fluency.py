"""Fluency of generated continuations: perplexity under an unsteered model, and repetition."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from transformer_lens import HookedTransformer

from flowsteer.patching import run_with_patches
from flowsteer.patching.inputs import left_pad, tokenize


@torch.no_grad()
def continuation_perplexity(
    model: HookedTransformer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 16,
) -> dict[str, float]:
    """Perplexity of each continuation (token ids) given its prompt, under ``model`` without patches.

    Returns ``perplexity`` (exp of the mean NLL over all continuation tokens), ``median_perplexity``
    (over sequences) and ``tokens``. Empty continuations are skipped.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    pairs = [(p, list(c)) for p, c in zip(prompts, continuations, strict=True) if len(c) > 0]
    total, count, per_sequence = 0.0, 0, []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        prompt_ids = tokenize(model, [p for p, _ in chunk])
        rows = [
            torch.cat([ids, torch.tensor(c, dtype=ids.dtype)]) for ids, (_, c) in zip(prompt_ids, chunk, strict=True)
        ]
        batch = left_pad(rows, pad_id).to(model.cfg.device)
        logprobs = run_with_patches(model, batch).float().log_softmax(-1)
        width = batch.tokens.shape[1]
        for i, (_, continuation) in enumerate(chunk):
            n = len(continuation)
            targets = batch.tokens[i, width - n :]
            predicted = logprobs[i, width - n - 1 : width - 1]
            nll = -predicted.gather(-1, targets[:, None]).sum().item()
            total, count = total + nll, count + n
            per_sequence.append(math.exp(nll / n))
    if not count:
        return {"perplexity": float("nan"), "median_perplexity": float("nan"), "tokens": 0}
    return {
        "perplexity": math.exp(total / count),
        "median_perplexity": float(torch.tensor(per_sequence).median()),
        "tokens": count,
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
