"""Local, reproducible scoring of steered generations, in place of the paper's gpt-4o-mini judge.

- **Behaviour** B: P(theme | text) from `ThemeClassifier` (trained on ``data/themes``).
- **Coherence** C: ``min(1, ppl_ref / ppl) x (1 - repetition)``: ``ppl`` is the perplexity of the generated
  tokens given the prompt under the *unsteered* model (`flowsteer.evals.perplexity`), ``ppl_ref`` a reference
  (`SteeringScorer.calibrate`: the median over the unsteered model's own samples), so ordinary unsteered text
  scores about 1 and gibberish low; ``repetition`` (`flowsteer.evals.repetition`) punishes loops ("wedding
  wedding wedding ..."), whose perplexity is low once they start. Texts of fewer than two words score 0.
- Combined as Feature Flow does: **B x C** for activation, **(1 - B) x C** for deactivation. Both
  factors lie in [0, 1], as the paper's 0-5 judge scores divided by 5 do.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.evals.classifier import ThemeClassifier
from flowsteer.evals.text import perplexity, repetition
from flowsteer.patching import Generation


def coherence(perplexities: Float[Tensor, " n"], texts: Sequence[str], reference: float) -> Float[Tensor, " n"]:
    """``min(1, reference / ppl) * (1 - repetition)``; 0 for texts of fewer than two words."""
    fluency = (reference / perplexities).clamp(max=1.0).nan_to_num(0.0)
    rep = torch.tensor([repetition(t) for t in texts])
    enough = torch.tensor([len(t.split()) >= 2 for t in texts])
    return torch.where(enough, fluency * (1 - rep), torch.zeros_like(fluency))


@dataclass
class Scores:
    """Per-text scores of one setting; ``summary()`` gives their means."""

    texts: list[str]
    behaviour: Tensor
    coherence: Tensor
    perplexity: Tensor
    repetition: Tensor

    def combined(self, deactivate: bool = False) -> Tensor:
        """B x C, or (1 - B) x C for deactivation."""
        return ((1 - self.behaviour) if deactivate else self.behaviour) * self.coherence

    def summary(self) -> dict[str, float]:
        finite = self.perplexity[self.perplexity.isfinite()]
        n = len(self.texts)
        se = lambda x: float(x.std() / n**0.5) if n > 1 else 0.0  # noqa: E731
        return {
            "behaviour": float(self.behaviour.mean()),
            "coherence": float(self.coherence.mean()),
            "activation_score": float(self.combined().mean()),
            "deactivation_score": float(self.combined(deactivate=True).mean()),
            "behaviour_se": se(self.behaviour),
            "coherence_se": se(self.coherence),
            "activation_score_se": se(self.combined()),
            "deactivation_score_se": se(self.combined(deactivate=True)),
            "perplexity_median": float(finite.median()) if len(finite) else float("inf"),
            "repetition": float(self.repetition.mean()),
            "n": n,
        }

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{b:.2f}</td><td>{c:.2f}</td><td>{html.escape(t)}</td></tr>"
            for t, b, c in zip(self.texts, self.behaviour.tolist(), self.coherence.tolist(), strict=True)
        )
        means = self.summary()
        return (
            f"<p>B {means['behaviour']:.2f}, C {means['coherence']:.2f}, B×C {means['activation_score']:.2f}</p>"
            f"<table><tr><th>B</th><th>C</th><th>text</th></tr>{rows}</table>"
        )


class SteeringScorer:
    """Scores generations for a theme: ``scorer(prompts, generation, theme)`` -> `Scores`.

    Args:
        model: the *unsteered* model that judges perplexity.
        classifier: a fitted `ThemeClassifier`.
        reference_perplexity: ppl_ref of the coherence score; `calibrate` sets it from unsteered samples.
    """

    def __init__(self, model: HookedTransformer, classifier: ThemeClassifier, reference_perplexity: float = 20.0):
        self.model, self.classifier, self.reference = model, classifier, float(reference_perplexity)

    def calibrate(self, prompts: Sequence[str] | str, generation: Generation) -> float:
        """Set ppl_ref to the median perplexity of unsteered samples; returns it."""
        prompts = [prompts] * len(generation) if isinstance(prompts, str) else list(prompts)
        ppl = perplexity(self.model, prompts, generation.tokens)
        self.reference = float(ppl[ppl.isfinite()].median())
        return self.reference

    def __call__(self, prompts: Sequence[str] | str, generation: Generation, theme: str) -> Scores:
        texts = list(generation.texts)
        prompts = [prompts] * len(texts) if isinstance(prompts, str) else list(prompts)
        ppl = perplexity(self.model, prompts, generation.tokens)
        return Scores(
            texts,
            self.classifier.probability(texts, theme),
            coherence(ppl, texts, self.reference),
            ppl,
            torch.tensor([repetition(t) for t in texts]),
        )
