"""Flow graphs as circuit-tracer graph files, validated by circuit-tracer's own pydantic models.

circuit-tracer is installed without its dependencies (``pip install --no-deps circuit-tracer``: its
declared ones pin transformers<=4.57.3 and pull nnsight); its ``frontend.graph_models`` needs only
pydantic.
"""

from __future__ import annotations

import json

import networkx as nx
import pytest

from flowsteer.cli import main
from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.classes import FixedThresholds
from flowsteer.flow.exports import FEATURE_TYPES
from flowsteer.flow.graph import FlowGraph
from tests.flow_synthetic import planted_chain_bank, save_bank

graph_models = pytest.importorskip(
    "circuit_tracer.frontend.graph_models", reason="pip install --no-deps circuit-tracer==0.5.0"
)

LABELS = {"3/res/5": "seed <label>", "2/res/7": "before", "3/mlp/11": "mlp match"}


@pytest.fixture(scope="module")
def flow():
    bank = planted_chain_bank()[0]
    return build_flow_graph(bank, "3/res/5", labels=LABELS, thresholds=FixedThresholds(module=0.05))


def validate(data: dict) -> None:
    """circuit-tracer's Model validates the file and dumps it back unchanged (no field dropped or coerced)."""
    model = graph_models.Model.model_validate(data)
    assert model.model_dump() == data
    for link in data["links"]:  # Model types links as plain dicts; its Link model checks each
        graph_models.Link.model_validate(link)


def test_export_validates_and_maps_features(flow):
    data = json.loads(json.dumps(flow.to_circuit_tracer(scan="tiny-bank")))
    validate(data)
    nodes = {node["node_id"]: node for node in data["nodes"]}
    assert set(nodes) == set(flow.graph.nodes) and len(nodes) == len(flow) >= 4
    assert {n["feature_type"] for n in nodes.values()} == {FEATURE_TYPES[k] for k in ("res", "mlp", "att")}
    assert nodes["3/mlp/11"]["layer"] == "3" and nodes["2/res/7"]["layer"] == "2"
    assert all(n["ctx_idx"] == 0 and n["activation"] is None for n in nodes.values())
    assert nodes["3/res/5"]["clerp"] == "seed <label>" and nodes["3/att/13"]["clerp"] == ""
    assert len({n["feature"] for n in nodes.values()}) == len(nodes)  # distinct across res/mlp/att
    links = {(link["source"], link["target"]): link["weight"] for link in data["links"]}
    assert links == {(u, v): w for u, v, w in flow.graph.edges(data="weight")}
    assert links[("2/res/7", "3/res/5")] == pytest.approx(0.958, abs=1e-3)
    assert data["metadata"]["prompt"] == "" and data["metadata"]["scan"] == "tiny-bank"
    assert data["qParams"]["clickedId"] == "3/res/5"


def test_embedding_stream_and_kinds_sharing_an_index():
    graph = nx.DiGraph(seed="0/res/3")
    for node, layer in (("0/pre/3", -1), ("0/res/3", 0), ("0/mlp/3", 0), ("0/att/3", 0)):
        site, index = node.rsplit("/", 1)
        graph.add_node(node, site=site, kind=site.split("/")[1], index=int(index), layer=layer, seed=False, label="")
    graph.add_edge("0/pre/3", "0/res/3", weight=0.9)
    data = FlowGraph(graph).to_circuit_tracer()
    validate(data)
    nodes = {node["node_id"]: node for node in data["nodes"]}
    assert nodes["0/pre/3"]["layer"] == "E" and nodes["0/res/3"]["layer"] == "0"
    assert len({n["feature"] for n in nodes.values()}) == 4
    assert FlowGraph.from_circuit_tracer(data).graph.nodes["0/pre/3"]["layer"] == -1


def test_round_trip_through_a_file(flow, tmp_path):
    path = flow.save(tmp_path / "graph.json", format="circuit-tracer", slug="planted")
    data = json.loads(path.read_text())
    validate(data)
    assert data["metadata"]["slug"] == "planted"
    back = FlowGraph.load(path)
    assert back.seed == flow.seed and back.span == flow.span
    assert set(back.graph.nodes) == set(flow.graph.nodes)
    for node, attrs in flow.graph.nodes(data=True):  # what the schema can hold comes back exactly
        kept = ("site", "kind", "index", "layer", "seed", "label")
        assert {k: back.graph.nodes[node][k] for k in kept} == {k: attrs[k] for k in kept}, node
    assert sorted(back.graph.edges(data="weight")) == sorted(flow.graph.edges(data="weight"))
    with pytest.raises(ValueError, match="circuit-tracer graph files are JSON"):
        flow.save(tmp_path / "graph.graphml", format="circuit-tracer")
    foreign = dict(data, nodes=[dict(data["nodes"][0], node_id="12_345_0")])
    with pytest.raises(ValueError, match="not a flowsteer feature id"):
        FlowGraph.from_circuit_tracer(foreign)


def test_cli_writes_a_circuit_tracer_file(tmp_path, capsys):
    bank = save_bank(planted_chain_bank()[0], tmp_path / "bank")
    out = tmp_path / "graph.json"
    args = ["flow", "3/res/5", "--saes", str(bank), "--out", str(out), "--format", "circuit-tracer"]
    assert main(args + ["--scan", "planted-bank"]) == 0
    data = json.loads(out.read_text())
    validate(data)
    assert data["metadata"]["scan"] == "planted-bank" and "3/res/5" in {n["node_id"] for n in data["nodes"]}
