"""Scoring generated text without an API: sentiment (word list, activation probe) and fluency."""

from flowsteer.scoring.fluency import continuation_nll, continuation_perplexity, perplexity, repetition_rate
from flowsteer.scoring.sentiment import ActivationProbe, Lexicon

__all__ = [
    "ActivationProbe",
    "Lexicon",
    "continuation_nll",
    "continuation_perplexity",
    "perplexity",
    "repetition_rate",
]
