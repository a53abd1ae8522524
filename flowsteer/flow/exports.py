"""Flow graphs as circuit-tracer graph files (the JSON its frontend and Neuronpedia load), out and back.

The file follows circuit-tracer's own pydantic models (``circuit_tracer/frontend/graph_models.py``:
``Model`` = ``metadata`` + ``qParams`` + ``nodes`` + ``links``; the tests validate against them):

- one node per feature: ``node_id`` = ``jsNodeId`` = the feature id (``"12/res/345"``);
  ``layer`` = the block index as text (circuit-tracer's layers are strings; the embedding stream
  ``0/pre``, flowsteer layer -1, is ``"E"`` as circuit-tracer writes embeddings); ``ctx_idx`` = 0
  (no prompt); ``clerp`` = the feature's label; ``activation`` and ``influence`` = None (no data);
- ``feature`` = Cantor pairing of (site number, index), as circuit-tracer pairs (layer, index) for
  schema version 1, so res, mlp and att features with one index in one block stay distinct;
- ``feature_type`` names the site kind (`FEATURE_TYPES`). circuit-tracer writes no type per site
  kind: its values are ``"cross layer transcoder"`` (every learned feature), ``"mlp reconstruction
  error"``, ``"embedding"`` and ``"logit"``, and the schema types the field as free text;
- links = the graph's edges (predecessor -> successor) with ``weight`` = decoder cosine;
- ``metadata.prompt`` is empty (data-free) and ``prompt_tokens`` two placeholders
  (`PLACEHOLDER_TOKENS`): circuit-tracer's viewer (``frontend/assets/attribution_graph/util-cg.js``,
  ``formatData``) drops every feature found at more than 2/3 of the prompt's tokens, so with no
  tokens it drops them all (seen running ``formatData`` of circuit-tracer 0.5.0 under node, with
  stand-ins for the four d3 helpers it calls); ``qParams.pinnedIds`` and ``clickedId`` name the seed.

Thresholds, classes and scores have no place in the schema: they stay in the node-link JSON.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx

from flowsteer.sites import FeatureId

SCHEMA_VERSION = 1
FEATURE_TYPES = {"res": "residual sae", "pre": "residual sae", "mlp": "mlp sae", "att": "attention sae"}
_SITE_ORDER = ("res", "pre", "mlp", "att")
EMBEDDING_LAYER = "E"
PLACEHOLDER_TOKENS = ["<data-free>", "<no prompt>"]


def cantor_pair(x: int, y: int) -> int:
    """The Cantor pairing of two non-negative integers (circuit-tracer's feature number)."""
    return (x + y) * (x + y + 1) // 2 + y


def _site_number(layer: int, kind: str) -> int:
    """A non-negative number unique to (layer, kind); layer -1 (the embedding stream) included."""
    return len(_SITE_ORDER) * (layer + 1) + _SITE_ORDER.index(kind)


def to_circuit_tracer(
    graph: nx.DiGraph,
    *,
    slug: str | None = None,
    scan: str = "flowsteer",
    feature_types: Mapping[str, str] | None = None,
) -> dict:
    """A flow graph (its `networkx.DiGraph`) as a circuit-tracer graph file (a JSON-ready dict).

    Args:
        slug: the graph's name (circuit-tracer names the file ``{slug}.json``); default from the seed.
        scan: the model (and SAEs) the graph comes from; Neuronpedia reads it as a model id.
        feature_types: ``{kind: feature_type}`` over `FEATURE_TYPES`, e.g.
            ``{"res": "cross layer transcoder"}`` for the frontend's feature panel.
    """
    types = {**FEATURE_TYPES, **(feature_types or {})}
    seed = graph.graph.get("seed")
    nodes = []
    for node, data in sorted(graph.nodes(data=True), key=lambda item: FeatureId.parse(item[0])):
        layer, kind = int(data["layer"]), data["kind"]
        nodes.append(
            {
                "node_id": node,
                "feature": cantor_pair(_site_number(layer, kind), int(data["index"])),
                "layer": EMBEDDING_LAYER if layer < 0 else str(layer),
                "ctx_idx": 0,
                "feature_type": types[kind],
                "token_prob": 0.0,
                "is_target_logit": False,
                "run_idx": 0,
                "reverse_ctx_idx": 0,
                "jsNodeId": node,
                "clerp": str(data.get("label", "")),
                "influence": None,
                "activation": None,
            }
        )
    links = [
        {"source": source, "target": target, "weight": float(data["weight"])}
        for source, target, data in sorted(graph.edges(data=True))
    ]
    name = slug or ("flow-" + seed.replace("/", "-") if seed else "flow")
    return {
        "metadata": {
            "slug": name,
            "scan": scan,
            "transcoder_list": [],
            "prompt_tokens": list(PLACEHOLDER_TOKENS),
            "prompt": "",
            "node_threshold": None,
            "schema_version": SCHEMA_VERSION,
        },
        "qParams": {
            "pinnedIds": [seed] if seed else [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": seed or "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def from_circuit_tracer(data: Mapping) -> nx.DiGraph:
    """The flow graph back from a file `to_circuit_tracer` wrote: features, layers, labels, the seed
    and the weighted edges (not the thresholds, classes or scores, which the file does not hold)."""
    graph = nx.DiGraph()
    for node in data["nodes"]:
        try:
            feature = FeatureId.parse(node["node_id"])
        except ValueError:
            raise ValueError(
                f"node {node['node_id']!r} is not a flowsteer feature id (e.g. '12/res/345'); only graph files "
                "written by FlowGraph.to_circuit_tracer can be read back as flow graphs"
            ) from None
        layer = -1 if node["layer"] == EMBEDDING_LAYER else int(node["layer"])
        graph.add_node(
            str(feature),
            site=str(feature.site),
            kind=feature.site.short,
            index=feature.index,
            layer=layer,
            seed=False,
            label=node.get("clerp", ""),
        )
    for link in data["links"]:
        missing = [end for end in (link["source"], link["target"]) if end not in graph]
        if missing:
            raise ValueError(f"link {link['source']} -> {link['target']} names nodes the file does not have: {missing}")
        graph.add_edge(link["source"], link["target"], weight=float(link["weight"]))
    seed = data.get("qParams", {}).get("clickedId") or None
    if seed is not None:
        graph.nodes[seed]["seed"] = True
        graph.graph["seed"] = seed
    return graph
