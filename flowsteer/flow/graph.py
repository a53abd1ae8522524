"""`FlowGraph`: a feature-flow graph as a `networkx.DiGraph`, with helpers and exports.

Nodes are feature ids as text (``12/res/345``) with attributes:

    site, kind (res/pre/mlp/att), index, layer (the block whose output the feature lives in; the
    embedding stream ``0/pre`` is layer -1), label, context (top activating context, if labels
    were given), seed (bool). Residual nodes also carry class and their scores s_res, s_mlp,
    s_att with the thresholds t_res, t_mlp, t_att used to class them (absent where the bank has
    no SAE at that predecessor). Module nodes have class ``module``.

Edges run from predecessor to successor (``11/res/7 -> 12/res/345``, ``12/mlp/9 -> 12/res/345``),
with ``weight`` = cosine similarity of the two decoder directions. The graph attributes record
the seed, the thresholds, k and the class rule, so a saved graph explains itself.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import networkx as nx

from flowsteer.flow.exports import from_circuit_tracer, to_circuit_tracer
from flowsteer.paths import atomic_file, write_json
from flowsteer.sites import FeatureId, Site

RESIDUAL_KINDS = ("res", "pre")
KIND_ORDER = ("res", "pre", "mlp", "att")


class FlowGraph:
    """A feature-flow graph (``.graph`` is the `networkx.DiGraph`) and what methods need from it."""

    def __init__(self, graph: nx.DiGraph):
        if not isinstance(graph, nx.DiGraph):
            raise TypeError(f"FlowGraph wraps a networkx.DiGraph, got {type(graph).__name__}")
        self.graph = graph

    # -- reading ---------------------------------------------------------------------------------
    @property
    def seed(self) -> FeatureId | None:
        seed = self.graph.graph.get("seed")
        return FeatureId.parse(seed) if seed else None

    def feature(self, node: str) -> FeatureId:
        data = self.graph.nodes[node]
        return FeatureId(Site.parse(data["site"]), int(data["index"]))

    def residual_nodes(self) -> list[str]:
        return [n for n, d in self.graph.nodes(data=True) if d["kind"] in RESIDUAL_KINDS]

    @property
    def span(self) -> tuple[int, int]:
        """The similarity span [l_start, l_end]: first and last layer of the residual chain."""
        layers = [self.graph.nodes[n]["layer"] for n in self.residual_nodes()]
        if not layers:
            raise ValueError("this flow graph has no residual nodes")
        return min(layers), max(layers)

    def nodes_per_layer(self) -> dict[int, dict[str, int]]:
        """``{layer: {kind: count}}`` in layer order."""
        counts: dict[int, Counter] = defaultdict(Counter)
        for _, data in self.graph.nodes(data=True):
            counts[data["layer"]][data["kind"]] += 1
        return {layer: dict(counts[layer]) for layer in sorted(counts)}

    def features(
        self, kinds: tuple[str, ...] = ("res", "pre", "mlp", "att"), layers: set[int] | range | None = None
    ) -> list[FeatureId]:
        """The graph's features of the given kinds (and layers), in forward order."""
        chosen = [
            self.feature(n)
            for n, d in self.graph.nodes(data=True)
            if d["kind"] in kinds and (layers is None or d["layer"] in layers)
        ]
        return sorted(chosen)

    def by_layer(self, kinds: tuple[str, ...] = ("res", "pre", "mlp", "att")) -> dict[int, list[FeatureId]]:
        """Features per layer: the sets single-layer steering edits."""
        grouped: dict[int, list[FeatureId]] = defaultdict(list)
        for node, data in self.graph.nodes(data=True):
            if data["kind"] in kinds:
                grouped[data["layer"]].append(self.feature(node))
        return {layer: sorted(grouped[layer]) for layer in sorted(grouped)}

    def up_to(self, layer: int, kinds: tuple[str, ...] = ("res", "pre", "mlp", "att")) -> list[FeatureId]:
        """Features of all layers <= ``layer``: the set cumulative steering edits."""
        return [f for lay, feats in self.by_layer(kinds).items() if lay <= layer for f in feats]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __contains__(self, feature: object) -> bool:
        return str(feature) in self.graph

    def __repr__(self) -> str:
        span = self.span if self.residual_nodes() else None
        return (
            f"FlowGraph(seed={self.seed}, nodes={len(self)}, edges={self.graph.number_of_edges()}, "
            f"span={span}, per_layer={self.nodes_per_layer()})"
        )

    # -- saving and loading ------------------------------------------------------------------------
    def to_json(self) -> dict:
        """networkx node-link data (``edges="links"``), every attribute kept; not a circuit-tracer file."""
        return nx.node_link_data(self.graph, edges="links")

    @classmethod
    def from_json(cls, data: dict) -> FlowGraph:
        return cls(nx.node_link_graph(data, directed=True, edges="links"))

    def to_circuit_tracer(self, **metadata) -> dict:
        """A circuit-tracer graph file (`flowsteer.flow.exports.to_circuit_tracer`: ``slug``, ``scan``,
        ``feature_types``); data-free: no prompt, no activations, cosine weights."""
        return to_circuit_tracer(self.graph, **metadata)

    @classmethod
    def from_circuit_tracer(cls, data: dict) -> FlowGraph:
        """Read back a file `to_circuit_tracer` wrote (features, labels, seed, weighted edges)."""
        return cls(from_circuit_tracer(data))

    def save(self, path: str | Path, *, format: str = "node-link", **options) -> Path:
        """Write by suffix: .json (``format="node-link"``, or ``"circuit-tracer"`` with ``options``
        for `to_circuit_tracer`), .graphml, .html (interactive, offline), or any figure format
        matplotlib writes (.png, .svg, .pdf); ``options`` go to the figure/HTML renderer."""
        path = Path(path)
        suffix = path.suffix.lower()
        if format not in ("node-link", "circuit-tracer"):
            raise ValueError(f"format={format!r}: use 'node-link' or 'circuit-tracer'")
        if format == "circuit-tracer":
            if suffix != ".json":
                raise ValueError(f"circuit-tracer graph files are JSON; name the file {path.stem}.json")
            write_json(path, self.to_circuit_tracer(**options))
        elif suffix == ".json":
            write_json(path, self.to_json())
        elif suffix == ".graphml":
            with atomic_file(path, "wb") as handle:
                nx.write_graphml(self.graph, handle)
        elif suffix in (".html", ".htm"):
            from flowsteer.flow.html import flow_html

            with atomic_file(path) as handle:
                handle.write(flow_html(self, **options))
        else:
            from flowsteer.flow.render import save_figure

            save_figure(self, path, **options)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FlowGraph:
        """Read a graph saved as .json (node-link or circuit-tracer) or .graphml."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            return cls.from_circuit_tracer(data) if "qParams" in data else cls.from_json(data)
        if path.suffix.lower() == ".graphml":
            graph = nx.read_graphml(path)
            for key in ("node_default", "edge_default"):  # GraphML bookkeeping, not ours
                graph.graph.pop(key, None)
            return cls(graph if graph.is_directed() else graph.to_directed())
        raise ValueError(f"cannot load a flow graph from {path.name}; use a .json or .graphml file")

    # -- display -----------------------------------------------------------------------------------
    def figure(self, **options):
        """The layered matplotlib figure (`flowsteer.flow.render.draw`)."""
        from flowsteer.flow.render import draw

        return draw(self, **options)

    def html(self, **options) -> str:
        """A self-contained interactive HTML page (`flowsteer.flow.html.flow_html`)."""
        from flowsteer.flow.html import flow_html

        return flow_html(self, **options)

    def _repr_png_(self) -> bytes:
        from flowsteer.flow.render import png_bytes

        return png_bytes(self)

    def _repr_html_(self) -> str:
        from flowsteer.flow.html import flow_html

        return flow_html(self, fragment=True)
