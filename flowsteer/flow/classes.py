"""Source classes of residual features: translated / processed / newborn / unexplained.

Feature Flow (arXiv 2502.03032, §3.3) classes a residual feature by whether its scores are "high":

    translated   high s^R, low s^M and s^A   (carried over from the previous residual)
    processed    high s^R, high s^M or s^A   (changed by the MLP / attention)
    newborn      low s^R,  high s^M or s^A   (created by the MLP / attention)
    unexplained  all low

"Thresholds for high and low are specific for each layer", and the paper gives none. A
`ThresholdRule` supplies them, per layer and per predecessor:

- `ChanceThresholds` (the default): a score is high when a random direction would score lower
  with the same predecessor SAE in at least ``quantile`` (99%) of draws. The threshold depends
  on d, the predecessor's width and its decoder geometry, so it differs per layer, has a meaning
  ("better than chance") and leaves the class shares free to vary, which is what the per-layer
  statistics compare.
- `QuantileThresholds`: the q-quantile of the layer's own scores (the digest's suggestion). It
  fixes the share of "high" scores at 1 - q in every layer, so class shares mostly reflect q.
- `FixedThresholds`: one threshold for all layers (e.g. the graph thresholds 0.5 / 0.15).

A predecessor without an SAE counts as low.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from flowsteer.flow.matching import topk_cosine
from flowsteer.flow.scores import LayerScores, layer_scores
from flowsteer.flow.topology import predecessor_sites
from flowsteer.sites import Site

CLASSES = ("translated", "processed", "newborn", "unexplained")


class ThresholdRule(ABC):
    """Per-layer thresholds for "high" scores: ``thresholds(saes, site) -> {"res": t, "mlp": t, "att": t}``."""

    @abstractmethod
    def thresholds(
        self, saes: Mapping[Site, object], site: Site, scores: LayerScores | None = None
    ) -> dict[str, float]:
        """Thresholds for the predecessors of residual ``site`` (``scores`` = its full `layer_scores`, if known)."""


@dataclass(frozen=True)
class FixedThresholds(ThresholdRule):
    """The same thresholds in every layer: ``res`` for residual predecessors (t^R, the chain cut of a flow graph),
    ``module`` for MLP and attention ones. `PAPER_THRESHOLDS` holds Feature Flow's graph thresholds."""

    res: float = 0.5
    module: float = 0.15

    def __post_init__(self) -> None:
        if not 0 <= self.res <= 1 or not 0 <= self.module <= 1:
            raise ValueError(f"thresholds are cosine similarities in [0, 1], got res={self.res}, module={self.module}")

    def thresholds(self, saes, site, scores=None):
        keys = predecessor_sites(saes, site)
        return {key: self.res if key == "res" else self.module for key in keys}


# Feature Flow's graph thresholds (§3.3, App. B): the residual chain is cut below 0.5; module nodes from 0.15 (the
# paper's Table 5 uses 0.25 for MLP nodes). The one place these numbers live.
PAPER_THRESHOLDS = FixedThresholds(res=0.5, module=0.15)


@dataclass(frozen=True)
class QuantileThresholds(ThresholdRule):
    """The ``q``-quantile of the layer's own s^P over all its features, per predecessor."""

    q: float = 0.5

    def __post_init__(self):
        if not 0 < self.q < 1:
            raise ValueError(f"q={self.q} must lie strictly between 0 and 1")

    def thresholds(self, saes, site, scores=None):
        if scores is None or len(scores.rows) != saes[site].cfg.d_sae:
            scores = layer_scores(saes, site)
        return {key: float(torch.quantile(scores.score(key).float(), self.q)) for key in scores.matches}


CHANCE_SEED = 2502_03032  # a fixed seed of its own, so chance draws never coincide with other seed-0 draws


@torch.no_grad()
def chance_level(sae: object, quantile: float = 0.99, samples: int = 2048, seed: int = CHANCE_SEED) -> float:
    """The ``quantile`` of the top-1 cosine a uniformly random unit direction reaches against ``sae``'s
    decoder (``samples`` draws, seeded)."""
    d = sae.cfg.d_in
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(samples, d, generator=generator).to(sae.W_dec)
    best = topk_cosine(directions, sae.W_dec.detach()).top1_scores
    return float(torch.quantile(best.float(), quantile))


@dataclass(frozen=True)
class ChanceThresholds(ThresholdRule):
    """High = above the ``quantile`` (0.99) of random directions' top-1 cosine with the predecessor SAE."""

    quantile: float = 0.99
    samples: int = 2048
    seed: int = CHANCE_SEED

    def thresholds(self, saes, site, scores=None):
        return {
            key: chance_level(saes[pred], self.quantile, self.samples, self.seed)
            for key, pred in predecessor_sites(saes, site).items()
        }


def _high(scores: Mapping[str, Tensor | float], thresholds: Mapping[str, float], key: str) -> Tensor | bool:
    if key not in scores or key not in thresholds:
        return False
    return torch.as_tensor(scores[key]) >= thresholds[key]


def classify(scores: Mapping[str, Tensor | float], thresholds: Mapping[str, float]) -> Int[Tensor, ...]:
    """Class codes (indices into `CLASSES`) from scores ``{"res": s^R, "mlp": s^M, "att": s^A}``."""
    shape = next((torch.as_tensor(v).shape for v in scores.values()), torch.Size([]))
    res = torch.as_tensor(_high(scores, thresholds, "res")).expand(shape)
    module = torch.as_tensor(_high(scores, thresholds, "mlp")) | torch.as_tensor(_high(scores, thresholds, "att"))
    module = module.expand(shape)
    codes = torch.full(shape, CLASSES.index("unexplained"), dtype=torch.long)
    codes[res & ~module] = CLASSES.index("translated")
    codes[res & module] = CLASSES.index("processed")
    codes[~res & module] = CLASSES.index("newborn")
    return codes


def class_name(scores: Mapping[str, float], thresholds: Mapping[str, float]) -> str:
    """The class of one feature."""
    return CLASSES[int(classify(scores, thresholds))]


def layer_classes(scores: LayerScores, thresholds: Mapping[str, float]) -> Int[Tensor, " f"]:
    """Class codes of every scored feature of a layer."""
    return classify({key: scores.score(key) for key in scores.matches}, thresholds)
