"""Picking an interesting seed feature from a bank automatically, with its labelled flow graph (for demos).

`pick_seed` ranks residual features in three steps:

1. **data-free, every feature of the candidate layers** (default: the residual sites whose block
   also has MLP and attention SAEs, where module contributions can show): the number of steps of
   the feature's top-1 residual chain, backward and forward, with similarity >= ``res_threshold``
   at every step (the chain a k = 1 flow graph follows), plus one for each of s^M, s^A above its
   chance level (`ChanceThresholds`); ties broken by s^R. The best ``candidates`` go on, skipping
   features that already lie on a front-runner's graph (one long chain would otherwise fill the list).
2. **the flow graph of each candidate** (`build_flow_graph`, k = 1): structure = residual nodes +
   module nodes whose similarity is above their layer's chance level.
3. **with a model, labels**: one pass over a small corpus (default: the first ``corpus_rows`` rows
   of 128 tokens of the built-in corpus's eval split) labels the candidates' graphs (promoted tokens
   only for their nodes). Candidates active in the corpus rank first; then by structure +
   readability, the share of the seed's top-8 promoted tokens that are words (>= 3 letters).

The chosen graph carries the labels; ``choice.save("flow.png", "flow.html")`` renders it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.classes import PAPER_THRESHOLDS, ChanceThresholds, FixedThresholds, ThresholdRule
from flowsteer.flow.graph import FlowGraph
from flowsteer.flow.labels import FeatureLabels
from flowsteer.flow.matching import topk_cosine
from flowsteer.flow.scores import layer_scores
from flowsteer.flow.tokens import Corpus
from flowsteer.flow.topology import PREDECESSORS, predecessor_sites, residual_sites
from flowsteer.sites import FeatureId, Site

WORD = re.compile(r"[A-Za-z]{3,}")


@dataclass
class SeedChoice:
    """The picked seed, its (labelled) flow graph, the ranked candidates and the time of each step."""

    seed: FeatureId
    flow: FlowGraph
    labels: FeatureLabels | None
    candidates: list[dict]
    seconds: dict[str, float] = field(default_factory=dict)

    def save(self, *paths: str | Path) -> list[Path]:
        """Render the graph to each path (format by suffix, see `FlowGraph.save`)."""
        return [self.flow.save(path) for path in paths]


class _Memo(ThresholdRule):
    """A threshold rule computed once per site (chance levels are costly to repeat per graph)."""

    def __init__(self, rule: ThresholdRule):
        self.rule, self.cache = rule, {}

    def thresholds(self, saes, site, scores=None):
        if site not in self.cache:
            self.cache[site] = self.rule.thresholds(saes, site, scores)
        return self.cache[site]

    def __repr__(self) -> str:
        return repr(self.rule)


@torch.no_grad()
def chain_steps(
    saes: Mapping[Site, object], res_threshold: float = PAPER_THRESHOLDS.res
) -> tuple[dict[Site, Int[Tensor, " F"]], dict[Site, Int[Tensor, " F"]]]:
    """Steps of every residual feature's top-1 chain backward and forward, each step with cosine
    similarity >= ``res_threshold`` (0 where the first step already falls below)."""
    sites = residual_sites(saes)
    backward: dict[Site, Tensor] = {}
    forward: dict[Site, Tensor] = {}
    for position, site in sites.items():
        previous = sites.get(position - 1)
        steps = torch.zeros(saes[site].cfg.d_sae, dtype=torch.long)
        if previous is not None:
            match = topk_cosine(saes[site], saes[previous])
            keep = match.top1_scores >= res_threshold
            steps = torch.where(keep, 1 + backward[previous][match.top1], steps)
        backward[site] = steps
    for position, site in reversed(sites.items()):
        following = sites.get(position + 1)
        steps = torch.zeros(saes[site].cfg.d_sae, dtype=torch.long)
        if following is not None:
            match = topk_cosine(saes[site], saes[following])
            keep = match.top1_scores >= res_threshold
            steps = torch.where(keep, 1 + forward[following][match.top1], steps)
        forward[site] = steps
    return backward, forward


def candidate_sites(saes: Mapping[Site, object]) -> list[Site]:
    """Residual sites whose three predecessors all have SAEs; else every residual site with one."""
    sites = [s for s in residual_sites(saes).values() if predecessor_sites(saes, s)]
    complete = [s for s in sites if len(predecessor_sites(saes, s)) == len(PREDECESSORS)]
    return complete or sites


def readability(labels: FeatureLabels, feature: FeatureId, n: int = 8) -> float:
    """Share of the feature's top ``n`` promoted tokens that are words (>= 3 ASCII letters)."""
    tokens = labels.promoted_tokens(feature, n)
    return sum(bool(WORD.fullmatch(t.strip())) for t in tokens) / max(len(tokens), 1)


def _structure(flow: FlowGraph) -> tuple[int, int]:
    """(residual nodes, module nodes above their layer's chance level)."""
    graph = flow.graph
    modules = 0
    for source, target, data in graph.edges(data=True):
        kind = graph.nodes[source]["kind"]
        threshold = graph.nodes[target].get(f"t_{kind}")
        if kind in ("mlp", "att") and threshold is not None and data["weight"] >= threshold:
            modules += 1
    return len(flow.residual_nodes()), modules


def default_corpus(model: HookedTransformer, rows: int = 32, context: int = 128) -> Tensor:
    """The first ``rows`` rows of ``context`` tokens of the built-in corpus's eval split."""
    from flowsteer.data import token_chunks

    return token_chunks(model.tokenizer, "eval", context)[:rows]


def pick_seed(
    saes: Mapping[Site, object],
    model: HookedTransformer | None = None,
    corpus: Corpus | None = None,
    *,
    sites: Sequence[Site | str] | None = None,
    candidates: int = 12,
    thresholds: FixedThresholds = PAPER_THRESHOLDS,
    corpus_rows: int = 32,
    rule: ThresholdRule | None = None,
) -> SeedChoice:
    """Pick an interesting residual seed feature and build its flow graph (labelled when ``model`` is given).

    Args:
        saes: the bank (`SAEBank` or any ``Mapping[Site, SAE]``).
        model: the model the SAEs belong to; without it the choice is data-free and unlabelled.
        corpus: texts or token tensors for the labels (default: `default_corpus` with ``corpus_rows``).
        sites: residual sites to pick from (default `candidate_sites`).
        candidates: how many data-free front-runners get a graph (and labels).
        thresholds: the graph thresholds (`build_flow_graph`); ``res`` is also the chain cut of the ranking.
        rule: per-layer chance levels for "module match above chance" (default `ChanceThresholds`).
    """
    clock, seconds = time.perf_counter(), {}
    rule = _Memo(rule or ChanceThresholds())
    sites = [Site.parse(s) for s in sites] if sites is not None else candidate_sites(saes)
    if not sites:
        raise ValueError("the bank has no residual SAE with a predecessor SAE to pick a seed from")
    backward, forward = chain_steps(saes, thresholds.res)
    ranked = []
    for site in sites:
        if site not in backward:
            raise ValueError(f"{site} is not a residual site of this bank")
        scores = layer_scores(saes, site)
        high = rule.thresholds(saes, site, scores)
        modules = sum((scores.score(k) >= high[k]).long() for k in ("mlp", "att") if k in scores.matches)
        tie = scores.score("res") if "res" in scores.matches else torch.zeros(len(scores.rows))
        value = backward[site] + forward[site] + modules + 0.5 * tie
        best = value.topk(min(4 * candidates, len(value)))  # spares for candidates on one chain
        ranked += [(float(v), FeatureId(site, int(i))) for v, i in zip(best.values, best.indices, strict=True)]
    ranked.sort(key=lambda pair: -pair[0])
    seconds["rank"] = time.perf_counter() - clock

    options = dict(thresholds=thresholds, rule=rule)
    graphs: dict[FeatureId, FlowGraph] = {}
    covered: set[str] = set()  # nodes of the graphs built so far: a feature on them adds no new graph
    for _, feature in ranked:
        if len(graphs) == candidates:
            break
        if str(feature) not in covered:
            graphs[feature] = build_flow_graph(saes, feature, **options)
            covered.update(graphs[feature].graph)
    ranked = [(value, feature) for value, feature in ranked if feature in graphs]
    seconds["graphs"] = time.perf_counter() - clock - seconds["rank"]
    labels = None
    if model is not None:
        features: dict[Site, set[int]] = {}
        for flow in graphs.values():
            for node in flow.graph:
                feature = flow.feature(node)
                features.setdefault(feature.site, set()).add(feature.index)
        corpus = default_corpus(model, corpus_rows) if corpus is None else corpus
        labels = FeatureLabels.compute(
            model, saes, [corpus] if isinstance(corpus, Tensor) else corpus, features=features
        )
        seconds["labels"] = time.perf_counter() - clock - seconds["rank"] - seconds["graphs"]

    table = []
    for prescore, feature in ranked:
        residual, modules = _structure(graphs[feature])
        entry = {
            "seed": str(feature),
            "prescore": prescore,
            "span": list(graphs[feature].span),
            "residual_nodes": residual,
            "modules_above_chance": modules,
            "score": float(residual + modules),
        }
        if labels is not None:
            entry["active"] = bool(labels.contexts(feature, 1))
            entry["readability"] = readability(labels, feature)
            entry["score"] += entry["readability"]
            entry["label"], entry["context"] = labels(feature)
        table.append(entry)
    table.sort(key=lambda e: (-int(e.get("active", True)), -e["score"], -e["prescore"]))
    seed = FeatureId.parse(table[0]["seed"])
    flow = build_flow_graph(saes, seed, labels=labels, **options) if labels is not None else graphs[seed]
    seconds["total"] = time.perf_counter() - clock
    return SeedChoice(seed, flow, labels, table, seconds)
