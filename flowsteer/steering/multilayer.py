"""Multi-layer steering along a flow graph (Feature Flow §4.2, §5.3, App. B).

A `FlowGraph` groups its features by layer (module features at their block, residual features at
the block whose output holds them). For a chosen layer l:

- **single**: steer the graph's features at layer l only;
- **cumulative**: steer the graph's features at every layer up to l.

``add`` steering spreads the base strength with a `Schedule` (constant, linear, exponential; s in
feature units, `flowsteer.steering.units`); ``rescale`` (deactivation) uses the same r everywhere,
as the paper does. The result is an ordinary `FeatureSteerer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import nn

from flowsteer.flow.graph import FlowGraph
from flowsteer.sites import FeatureId, Site
from flowsteer.steering.schedules import Constant, Schedule
from flowsteer.steering.steerer import FeatureSteerer, Mode
from flowsteer.steering.units import Units

Strategy = Literal["single", "cumulative"]
GRAPH_STRATEGIES: tuple[str, ...] = ("single", "cumulative")
GRAPH_SITE_KINDS = ("res", "pre", "mlp", "att")


def graph_features(
    graph: FlowGraph, layer: int, strategy: Strategy = "cumulative", kinds: tuple[str, ...] = GRAPH_SITE_KINDS
) -> list[tuple[FeatureId, int]]:
    """``(feature, layer)`` pairs a strategy steers at ``layer``, in forward order."""
    if strategy not in GRAPH_STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; use one of {', '.join(GRAPH_STRATEGIES)}")
    chosen = [
        (feature, lay)
        for lay, features in graph.by_layer(kinds).items()
        if (lay == layer if strategy == "single" else lay <= layer)
        for feature in features
    ]
    if not chosen:
        layers = sorted(graph.by_layer(kinds))
        raise ValueError(f"the graph has no {strategy} features at layer {layer}; its layers are {layers}")
    return chosen


def graph_steerer(
    graph: FlowGraph,
    saes: Mapping[Site, nn.Module],
    layer: int,
    strength: float,
    *,
    strategy: Strategy = "cumulative",
    schedule: Schedule | None = None,
    mode: Mode = "add",
    units: Units | None = None,
    kinds: tuple[str, ...] = GRAPH_SITE_KINDS,
) -> FeatureSteerer:
    """A `FeatureSteerer` for the graph's features chosen by ``strategy`` at ``layer``.

    ``strength`` is s for ``add`` (each feature gets ``schedule(s, its layer, graph.span)``) and r for
    ``rescale`` (same r for all). Features at sites without an SAE in ``saes`` raise.
    """
    chosen = graph_features(graph, layer, strategy, kinds)
    schedule = schedule or Constant()
    if mode == "add":
        span = graph.span
        strengths = [schedule(strength, lay, span) for _, lay in chosen]
    else:
        strengths = [strength] * len(chosen)
    return FeatureSteerer(saes, [f for f, _ in chosen], mode, strengths, units=units)
