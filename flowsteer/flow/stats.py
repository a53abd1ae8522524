"""Whole-model flow statistics: every residual feature of every layer matched to its predecessors.

`flow_statistics` computes s^R, s^M, s^A for all features of all residual SAEs (chunked top-1
cosine, so memory stays bounded), the per-layer thresholds of each `ThresholdRule` and the class
of every feature under each rule. `summary` condenses it into JSON (per-layer score quantiles,
thresholds, class shares); `save` writes the summary and the raw scores (safetensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowsteer.flow.classes import (
    CLASSES,
    PAPER_THRESHOLDS,
    ChanceThresholds,
    FixedThresholds,
    QuantileThresholds,
    ThresholdRule,
    chance_level,
    layer_classes,
)
from flowsteer.flow.folding import Weights
from flowsteer.flow.scores import LayerScores, model_scores
from flowsteer.paths import atomic_path, write_json
from flowsteer.sites import Site

DEFAULT_RULES: dict[str, ThresholdRule] = {
    "chance": ChanceThresholds(),
    "fixed": FixedThresholds(),
    "quantile": QuantileThresholds(),
}
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class FlowStatistics:
    """Scores of every residual feature, thresholds and classes per rule, and chance levels."""

    scores: dict[Site, LayerScores]
    rules: dict[str, ThresholdRule]
    thresholds: dict[str, dict[Site, dict[str, float]]] = field(default_factory=dict)
    classes: dict[str, dict[Site, torch.Tensor]] = field(default_factory=dict)
    chance: dict[Site, dict[str, float]] = field(default_factory=dict)

    @property
    def sites(self) -> list[Site]:
        return list(self.scores)


def flow_statistics(
    saes: Mapping[Site, object],
    rules: Mapping[str, ThresholdRule] | None = None,
    *,
    weights: Weights = "decoder",
    progress: bool = True,
) -> FlowStatistics:
    """Match all features of all consecutive site pairs and class them under every rule (a tqdm bar over layers
    unless ``progress=False``)."""
    rules = dict(DEFAULT_RULES if rules is None else rules)
    stats = FlowStatistics(model_scores(saes, weights=weights, progress=progress), rules)
    for site, scores in stats.scores.items():
        stats.chance[site] = {key: chance_level(saes[pred]) for key, pred in scores.predecessors.items()}
        for name, rule in rules.items():
            thresholds = rule.thresholds(saes, site, scores)
            stats.thresholds.setdefault(name, {})[site] = thresholds
            stats.classes.setdefault(name, {})[site] = layer_classes(scores, thresholds)
    return stats


def _describe(values: torch.Tensor) -> dict[str, float]:
    values = values.float()
    described = {"mean": float(values.mean())}
    described |= {
        f"q{int(q * 100)}": float(v)
        for q, v in zip(QUANTILES, torch.quantile(values, torch.tensor(QUANTILES)), strict=True)
    }
    for threshold in (PAPER_THRESHOLDS.res, PAPER_THRESHOLDS.module):
        described[f"share_at_least_{threshold:g}"] = float((values >= threshold).float().mean())
    return described


def summary(stats: FlowStatistics) -> dict:
    """JSON-able per-layer summary: score distributions, chance levels, thresholds and class shares."""
    layers = []
    for site, scores in stats.scores.items():
        entry = {
            "site": str(site),
            "layer": site.layer,
            "features": len(scores.rows),
            "predecessors": {key: str(pred) for key, pred in scores.predecessors.items()},
            "scores": {key: _describe(scores.score(key)) for key in scores.matches},
            "chance_level": stats.chance.get(site, {}),
            "thresholds": {name: stats.thresholds[name][site] for name in stats.rules},
            "class_shares": {},
        }
        for name in stats.rules:
            codes = stats.classes[name][site]
            entry["class_shares"][name] = {c: float((codes == i).float().mean()) for i, c in enumerate(CLASSES)}
        layers.append(entry)
    return {
        "rules": {name: repr(rule) for name, rule in stats.rules.items()},
        "classes": list(CLASSES),
        "layers": layers,
    }


def save(stats: FlowStatistics, directory: str | Path) -> dict[str, Path]:
    """Write ``flow_stats.json`` (the summary) and ``flow_scores.safetensors`` (every feature's scores,
    top-1 indices and classes, keyed ``"<site>:<name>"``) into ``directory``."""
    directory = Path(directory)
    tensors = {}
    for site, scores in stats.scores.items():
        for name, tensor in scores.as_dict().items():
            tensors[f"{site}:{name}"] = tensor.contiguous()
        for rule, classes in stats.classes.items():
            tensors[f"{site}:class_{rule}"] = classes[site].contiguous()
    scores_path = directory / "flow_scores.safetensors"
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(scores_path) as tmp:
        save_file(tensors, tmp)
    summary_path = directory / "flow_stats.json"
    write_json(summary_path, summary(stats))
    return {"summary": summary_path, "scores": scores_path}
