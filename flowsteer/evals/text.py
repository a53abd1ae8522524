"""Text metrics, each defined once: the NLL and perplexity of a continuation under a reference (unpatched) model,
and repetition (the share of word n-grams that repeat an earlier one)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.models.tl import unembed
from flowsteer.patching import cache_sites
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
    counts = torch.tensor([len(c) for c in continuations], dtype=torch.long)
    nll = torch.zeros(len(prompts))
    if len(counts) == 0 or int(counts.max()) == 0:
        return nll, counts
    rows = [torch.cat([p, torch.as_tensor(list(c), dtype=torch.long)])
            for p, c in zip(tokenize(model, list(prompts)), continuations, strict=True)]
    last = Site(model.cfg.n_layers - 1)
    offset = 0
    for piece in left_pad(rows, model.tokenizer.pad_token_id or 0).split(batch_size):
        lengths = counts[offset : offset + len(piece)]
        longest = int(lengths.max())
        if longest:
            # Only the positions that predict continuation tokens go through the unembedding.
            residual = cache_sites(model, piece, [last])[last][:, -longest - 1 : -1]
            logprobs = unembed(model, residual).float().log_softmax(-1)
            picked = logprobs.gather(-1, piece.tokens[:, -longest:, None].to(logprobs.device))[..., 0].cpu()
            for i, n in enumerate(lengths.tolist()):
                nll[offset + i] = -picked[i, longest - n :].sum()
        offset += len(piece)
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


WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic words, a trailing plural ``s`` stripped (``rings`` -> ``ring``)."""
    found = WORD.findall(text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in found]


def repetition(text: str, n: int = 3) -> float:
    """The share of the text's word ``n``-grams that repeat an earlier one: ``1 - distinct / all`` (0 when the text
    has no ``n``-gram). Loops ("please do not assist with this. please do not ...") score near 1."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str], n: int = 3) -> float:
    """Mean `repetition` over the texts that have an ``n``-gram (0.0 when none has)."""
    rates = [repetition(text, n) for text in texts if len(words(text)) >= n]
    return sum(rates) / len(rates) if rates else 0.0
