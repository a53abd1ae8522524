"""Coherence of generated text without a judge: perplexity under the unsteered model and repetition.

    coherence = min(1, ppl_ref / ppl) x (1 - repetition)

- ``ppl``: perplexity of the generated tokens given the prompt under the *unsteered* model (run
  through the patching API with no patches); ``ppl_ref`` a reference perplexity (in the analyses:
  the median over the unsteered model's own samples with the same prompt and sampling settings),
  so ordinary unsteered text scores about 1 and gibberish scores low;
- ``repetition``: 1 - distinct word bigrams / word bigrams. Degenerate loops ("wedding wedding
  wedding ...") have a low perplexity once started, but a repetition near 1, so they score near 0.

Texts with fewer than two words score 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import cache_sites
from flowsteer.patching.generate import unembed
from flowsteer.patching.inputs import left_pad, tokenize
from flowsteer.sites import Site
from flowsteer.steering.classifier import words


def repetition(text: str) -> float:
    """1 - distinct word bigrams / word bigrams (0 when a text has no bigram)."""
    tokens = words(text) or text.split()
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    if not bigrams:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


@torch.no_grad()
def perplexity(
    model: HookedTransformer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
) -> Float[Tensor, " n"]:
    """Perplexity of each continuation (token ids) given its prompt, under the unpatched model.

    Empty continuations get ``inf``.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    prompt_tokens = tokenize(model, list(prompts))
    last = Site(model.cfg.n_layers - 1)
    pad = model.tokenizer.pad_token_id or 0
    result = torch.full((len(prompts),), float("inf"))
    for start in range(0, len(prompts), batch_size):
        rows, lengths = [], []
        chunk = zip(prompt_tokens[start : start + batch_size], continuations[start : start + batch_size], strict=True)
        for p, c in chunk:
            rows.append(torch.cat([p, torch.as_tensor(list(c), dtype=torch.long)]))
            lengths.append(len(c))
        batch = left_pad(rows, pad).to(model.cfg.device)
        longest = max(lengths)
        if longest == 0:
            continue
        # Only the positions that predict continuation tokens go through the unembedding.
        residual = cache_sites(model, batch, [last])[last][:, -longest - 1 : -1]
        logits = unembed(model, residual).float().log_softmax(-1)
        logprobs = logits.gather(-1, batch.tokens[:, -longest:, None])[..., 0].cpu()
        for i, n in enumerate(lengths):
            if n > 0:
                result[start + i] = (-logprobs[i, longest - n :].mean()).exp()
    return result


def coherence(perplexities: Float[Tensor, " n"], texts: Sequence[str], reference: float) -> Float[Tensor, " n"]:
    """``min(1, reference / ppl) * (1 - repetition)``; 0 for texts of fewer than two words."""
    fluency = (reference / perplexities).clamp(max=1.0).nan_to_num(0.0)
    rep = torch.tensor([repetition(t) for t in texts])
    enough = torch.tensor([len(t.split()) >= 2 for t in texts])
    return torch.where(enough, fluency * (1 - rep), torch.zeros_like(fluency))
