"""Two local sentiment scorers: a word list and a logistic probe on a model's own activations.

Both are validated on held-out labelled texts before use (see analyses/innsteer_sentiment.py).
The probe reads text through the *unsteered* model, so a steered generation is judged by its words,
not by the steering that produced it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.evals.classifier import cross_validated_accuracy
from flowsteer.patching import cache_sites, encode
from flowsteer.patching.activations import position_mask
from flowsteer.sites import Site


@dataclass
class Lexicon:
    """Word-list score ``(#positive - #negative) / (#positive + #negative)`` in [-1, 1] (0 if neither)."""

    positive: frozenset[str]
    negative: frozenset[str]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Lexicon:
        data = json.loads(open(path).read())
        return cls(frozenset(w.lower() for w in data["positive"]), frozenset(w.lower() for w in data["negative"]))

    def score(self, text: str) -> float:
        words = re.findall(r"[a-z']+", text.lower())
        pos = sum(w in self.positive for w in words)
        neg = sum(w in self.negative for w in words)
        return (pos - neg) / (pos + neg) if pos + neg else 0.0

    def scores(self, texts: Sequence[str]) -> list[float]:
        return [self.score(text) for text in texts]


def mean_pooled(
    model: HookedTransformer, texts: Sequence[str], sites: Sequence[Site], batch_size: int = 16
) -> dict[Site, Float[Tensor, "n d"]]:
    """Mean activation over each text's tokens (the first token excluded) at each site."""
    pooled: dict[Site, list[Tensor]] = {site: [] for site in sites}
    for batch in encode(model, list(texts)).split(batch_size):
        acts = cache_sites(model, batch, sites)
        mask = position_mask(sites[0], slice(1, None), acts.positions, acts.prompt_lengths).float()
        for site in sites:
            summed = (acts[site].float() * mask[..., None]).sum(1)
            pooled[site].append(summed / mask.sum(1, keepdim=True).clamp_min(1))
    return {site: torch.cat(rows) for site, rows in pooled.items()}


@dataclass
class ActivationProbe:
    """Logistic regression on standardised mean-pooled activations at one site; ``P(positive)``."""

    site: Site
    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    @classmethod
    def fit(cls, site: Site, features: Tensor, labels: Tensor, l2: float = 1e-2, steps: int = 200) -> ActivationProbe:
        """Fit on rows ``features`` with 0/1 ``labels`` (L-BFGS, L2 penalty ``l2`` on the weights)."""
        mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
        x = (features - mean) / std
        y = labels.float()
        weight = torch.zeros(x.shape[1], requires_grad=True)
        bias = torch.zeros((), requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y) + l2 * weight.pow(2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        return cls(site, mean, std, weight.detach(), bias.detach())

    def probabilities(self, features: Tensor) -> Tensor:
        return torch.sigmoid(((features - self.mean) / self.std) @ self.weight + self.bias)

    def score(self, model: HookedTransformer, texts: Sequence[str], batch_size: int = 16) -> list[float]:
        """``P(positive)`` of each text, read by ``model`` without patches."""
        features = mean_pooled(model, texts, [self.site], batch_size)[self.site]
        return self.probabilities(features).tolist()


def probe_accuracy(features: Tensor, labels: Tensor, folds: int = 5, seed: int = 0, l2: float = 1e-2) -> float:
    """`flowsteer.evals.classifier.cross_validated_accuracy` of `ActivationProbe` on feature rows, 0/1 labels."""

    def fit(rows: list, train_labels: list):
        probe = ActivationProbe.fit(Site(0), torch.stack(rows), torch.tensor(train_labels), l2)
        return lambda batch: (probe.probabilities(torch.stack(batch)) > 0.5).long().tolist()

    return cross_validated_accuracy(list(features), labels.long().tolist(), fit, folds=folds, seed=seed)
