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

from flowsteer.scoring.fluency import perplexity
from flowsteer.steering.classifier import words

__all__ = ["coherence", "perplexity", "repetition"]


def repetition(text: str) -> float:
    """1 - distinct word bigrams / word bigrams (0 when a text has no bigram)."""
    tokens = words(text) or text.split()
    bigrams = list(zip(tokens, tokens[1:], strict=False))
    if not bigrams:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


def coherence(perplexities: Float[Tensor, " n"], texts: Sequence[str], reference: float) -> Float[Tensor, " n"]:
    """``min(1, reference / ppl) * (1 - repetition)``; 0 for texts of fewer than two words."""
    fluency = (reference / perplexities).clamp(max=1.0).nan_to_num(0.0)
    rep = torch.tensor([repetition(t) for t in texts])
    enough = torch.tensor([len(t.split()) >= 2 for t in texts])
    return torch.where(enough, fluency * (1 - rep), torch.zeros_like(fluency))
