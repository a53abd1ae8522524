"""Building a flow graph from a seed feature (Feature Flow, arXiv 2502.03032, §3.3 and App. B).

From a residual seed feature the graph grows

- backward, layer by layer: each residual node's top-k predecessors in the previous residual SAE
  (kept while s^R >= ``res_threshold``, 0.5 by default: the chain is cut where it drops below),
  and
- forward: the top-k features of the next residual SAE matched to the node (same cut),

until the chain breaks or the bank runs out of residual SAEs (a layer without one ends the chain).
Every residual node gets its MLP and attention predecessors of the same block as module nodes when
their similarity is >= ``module_threshold`` (0.15 by default; the paper's Table 5 uses 0.25 for
MLP nodes). Only consecutive positions are matched; long-range flow is their composition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

import networkx as nx
import torch

from flowsteer.flow.classes import PAPER_THRESHOLDS, ChanceThresholds, FixedThresholds, ThresholdRule, class_name
from flowsteer.flow.folding import Weights
from flowsteer.flow.graph import FlowGraph
from flowsteer.flow.matching import topk_cosine
from flowsteer.flow.scores import layer_scores
from flowsteer.flow.topology import predecessor_sites, stream_position, successor_site
from flowsteer.sites import FeatureId, Site, SiteError

Labeler = Callable[[FeatureId], tuple[str, str]] | Mapping[str, str] | None


def _describe(labels: Labeler, feature: FeatureId) -> dict[str, str]:
    if labels is None:
        return {"label": ""}
    if callable(labels):
        try:
            label, context = labels(feature)
        except KeyError:  # no labels for this site
            return {"label": ""}
        return {"label": label, "context": context}
    return {"label": labels.get(str(feature), "")}


def _column(site: Site) -> int:
    """The layer a node is drawn and grouped at: the block whose output holds it (0/pre -> -1)."""
    return stream_position(site) - 1 if site.kind in ("resid_pre", "resid_post") else site.layer


class _Builder:
    def __init__(self, saes, res_threshold, module_threshold, k, rule, labels, weights):
        self.saes, self.k, self.rule, self.labels, self.weights = saes, k, rule, labels, weights
        self.res_threshold, self.module_threshold = res_threshold, module_threshold
        self.graph = nx.DiGraph()
        self._thresholds: dict[Site, dict[str, float]] = {}

    def thresholds(self, site: Site) -> dict[str, float]:
        if site not in self._thresholds:
            self._thresholds[site] = self.rule.thresholds(self.saes, site)
        return self._thresholds[site]

    def add_node(self, feature: FeatureId, **attributes) -> str:
        node = str(feature)
        if node not in self.graph:
            self.graph.add_node(
                node,
                site=str(feature.site),
                kind=feature.site.short,
                index=feature.index,
                layer=_column(feature.site),
                seed=False,
                **_describe(self.labels, feature),
            )
        self.graph.nodes[node].update(attributes)
        return node

    def add_residual(self, feature: FeatureId) -> tuple[Site, list[tuple[int, float]]] | None:
        """Add a residual node with its scores, class and module nodes; return the previous residual
        site and the node's top-k (index, similarity) there, or None when it has no residual SAE."""
        node = self.add_node(feature)
        if not predecessor_sites(self.saes, feature.site):
            self.graph.nodes[node]["class"] = "unexplained"
            return None
        scores = layer_scores(
            self.saes, feature.site, k=self.k, rows=torch.tensor([feature.index]), weights=self.weights
        )
        thresholds = self.thresholds(feature.site)
        top = {
            key: list(zip(m.indices[0].tolist(), m.scores[0].tolist(), strict=True))
            for key, m in scores.matches.items()
        }
        best = {key: pairs[0][1] for key, pairs in top.items()}
        attributes = {f"s_{key}": value for key, value in best.items()}
        attributes |= {f"t_{key}": value for key, value in thresholds.items()}
        attributes["class"] = class_name(best, thresholds)
        self.graph.nodes[node].update(attributes)
        for key in ("mlp", "att"):
            for index, similarity in top.get(key, []):
                if similarity >= self.module_threshold:
                    module = self.add_node(FeatureId(scores.predecessors[key], index), **{"class": "module"})
                    self.graph.add_edge(module, node, weight=similarity)
        return (scores.predecessors["res"], top["res"]) if "res" in top else None

    def backward(self, seed: FeatureId) -> None:
        queue, seen = deque([seed]), {seed}
        while queue:
            feature = queue.popleft()
            found = self.add_residual(feature)
            if found is None:
                continue
            previous_site, pairs = found
            for index, similarity in pairs:
                if similarity < self.res_threshold:
                    continue
                previous = FeatureId(previous_site, index)
                self.graph.add_edge(self.add_node(previous), str(feature), weight=similarity)
                if previous not in seen:
                    seen.add(previous)
                    queue.append(previous)

    def forward(self, seed: FeatureId) -> None:
        queue, seen = deque([seed]), {seed}
        while queue:
            feature = queue.popleft()
            following = successor_site(self.saes, feature.site)
            if following is None:
                continue
            match = topk_cosine(
                self.saes[feature.site],
                self.saes[following],
                self.k,
                weights=self.weights,
                rows=torch.tensor([feature.index]),
            )
            for index, similarity in zip(match.indices[0].tolist(), match.scores[0].tolist(), strict=True):
                if similarity < self.res_threshold:
                    continue
                successor = FeatureId(following, index)
                if successor not in seen:
                    seen.add(successor)
                    self.add_residual(successor)
                    queue.append(successor)
                self.graph.add_edge(str(feature), str(successor), weight=similarity)


def build_flow_graph(
    saes: Mapping[Site, object],
    seed: FeatureId | str,
    *,
    thresholds: FixedThresholds = PAPER_THRESHOLDS,
    k: int = 1,
    backward: bool = True,
    forward: bool = True,
    rule: ThresholdRule | None = None,
    labels: Labeler = None,
    weights: Weights = "decoder",
) -> FlowGraph:
    """The flow graph of a residual ``seed`` feature (e.g. ``"18/res/123"``).

    Args:
        saes: SAEs by site (residual SAEs for the chain, MLP/attention SAEs for module nodes).
        thresholds: ``res`` is t^R, where the residual chain is cut (top similarity below it); module
            (MLP/attention) nodes are kept at similarity >= ``module`` (default `PAPER_THRESHOLDS`, 0.5 / 0.15).
        k: predecessors/successors considered per node (1 = the paper's top-1 matching).
        rule: the per-layer threshold rule that sets each residual node's class
            (default `ChanceThresholds`).
        labels: a `FeatureLabels` (or any callable feature -> (label, context)) or a mapping
            ``{"12/res/345": "label"}``; shown on figures and in the HTML view.
        weights: match on ``decoder`` directions (the paper), ``encoder`` or ``both``.
    """
    seed = FeatureId.parse(seed)
    if seed.site not in saes:
        raise SiteError(f"no SAE at {seed.site}; the bank has SAEs at {', '.join(map(str, sorted(saes)))}")
    if seed.site.kind not in ("resid_post", "resid_pre"):
        raise ValueError(f"the seed must be a residual feature (res or pre), got {seed}; seed with a res feature")
    seed.validate(max(s.layer for s in saes) + 1, saes[seed.site].cfg.d_sae)
    rule = rule or ChanceThresholds()
    builder = _Builder(saes, thresholds.res, thresholds.module, k, rule, labels, weights)
    if backward:
        builder.backward(seed)
    else:
        builder.add_residual(seed)
    builder.graph.nodes[str(seed)]["seed"] = True
    if forward:
        builder.forward(seed)
    builder.graph.graph.update(
        seed=str(seed),
        res_threshold=thresholds.res,
        module_threshold=thresholds.module,
        k=k,
        rule=repr(rule),
        weights=weights,
    )
    return FlowGraph(builder.graph)
