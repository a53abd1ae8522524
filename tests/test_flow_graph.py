"""Scores, classes and flow graphs on a planted chain; exports and rendering."""

from __future__ import annotations

import json
import re

import networkx as nx
import pytest
import torch

from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.classes import (
    CLASSES,
    ChanceThresholds,
    FixedThresholds,
    QuantileThresholds,
    chance_level,
    class_name,
    classify,
    layer_classes,
)
from flowsteer.flow.graph import FlowGraph
from flowsteer.flow.matching import topk_cosine
from flowsteer.flow.scores import layer_scores
from flowsteer.flow.topology import predecessor_sites
from flowsteer.saes import SAEBank
from flowsteer.sites import FeatureId, Site, SiteError
from tests.flow_synthetic import planted_chain_bank, save_bank, topk_sae, unit


@pytest.fixture(scope="module")
def planted():
    return planted_chain_bank()[0]


def test_classes_follow_the_high_low_rule():
    t = {"res": 0.5, "mlp": 0.3, "att": 0.3}
    assert class_name({"res": 0.9, "mlp": 0.1, "att": 0.2}, t) == "translated"
    assert class_name({"res": 0.9, "mlp": 0.1, "att": 0.4}, t) == "processed"
    assert class_name({"res": 0.2, "mlp": 0.7, "att": 0.1}, t) == "newborn"
    assert class_name({"res": 0.2, "mlp": 0.1, "att": 0.1}, t) == "unexplained"
    assert class_name({"mlp": 0.7}, t) == "newborn"  # no residual SAE: low
    codes = classify({"res": torch.tensor([0.9, 0.9, 0.1, 0.1]), "mlp": torch.tensor([0.0, 0.5, 0.5, 0.0])}, t)
    assert [CLASSES[c] for c in codes] == ["translated", "processed", "newborn", "unexplained"]


def test_threshold_rules(planted):
    site = Site(2, "resid_post")
    scores = layer_scores(planted, site)
    assert FixedThresholds(0.6, 0.2).thresholds(planted, site) == {"res": 0.6, "mlp": 0.2, "att": 0.2}
    median = QuantileThresholds(0.5).thresholds(planted, site, scores)
    high = layer_classes(scores, median)
    for key in ("res", "mlp"):  # half of the features score at or above their layer's median
        assert abs(float((scores.score(key) >= median[key]).float().mean()) - 0.5) < 0.02
    assert high.shape == (128,)
    chance = ChanceThresholds().thresholds(planted, site)
    assert set(chance) == {"res", "mlp", "att"} and all(0.2 < t < 0.7 for t in chance.values())


def test_chance_level_is_exceeded_by_one_percent_of_random_directions():
    sae = topk_sae(unit(torch.randn(256, 32, generator=torch.Generator().manual_seed(3))))
    level = chance_level(sae, quantile=0.99, samples=4096)
    fresh = torch.randn(20000, 32, generator=torch.Generator().manual_seed(4))
    share = float((topk_cosine(fresh, sae.W_dec.detach()).top1_scores >= level).float().mean())
    assert 0.005 < share < 0.02


def test_flow_graph_cuts_the_chain_and_filters_module_nodes(planted):
    flow = build_flow_graph(planted, "3/res/5")
    graph = flow.graph
    assert set(graph) == {"3/res/5", "2/res/7", "3/mlp/11"}
    assert flow.span == (2, 3)
    assert graph.edges["2/res/7", "3/res/5"]["weight"] == pytest.approx(1 / 1.09**0.5, abs=1e-5)
    assert graph.edges["3/mlp/11", "3/res/5"]["weight"] == pytest.approx(2**-0.5, abs=1e-5)
    seed = graph.nodes["3/res/5"]
    assert seed["seed"] and seed["class"] == "processed" and seed["s_att"] == pytest.approx(0.1 / 1.01**0.5, abs=1e-5)
    assert graph.nodes["2/res/7"]["s_res"] == pytest.approx(0.3 / (1.09 * 1.09) ** 0.5, abs=1e-5)
    assert graph.nodes["3/mlp/11"]["class"] == "module" and graph.nodes["3/mlp/11"]["layer"] == 3
    # both thresholds are configurable: a lower t^R keeps 1/res/9, a lower module threshold keeps 3/att/13
    wider = build_flow_graph(planted, "3/res/5", thresholds=FixedThresholds(res=0.25, module=0.05))
    assert {"1/res/9", "3/att/13"} <= set(wider.graph) and wider.span[0] <= 1
    forward = build_flow_graph(planted, "2/res/7", backward=False)
    assert set(forward.graph) == {"2/res/7", "3/res/5", "3/mlp/11"}
    assert forward.graph.has_edge("2/res/7", "3/res/5")


def test_steering_feature_sets(planted):
    flow = build_flow_graph(planted, "3/res/5", thresholds=FixedThresholds(res=0.25, module=0.05))
    by_layer = flow.by_layer()
    assert [str(f) for f in by_layer[3]] == ["3/att/13", "3/mlp/11", "3/res/5"]
    assert flow.up_to(2) == [f for layer in sorted(by_layer) if layer <= 2 for f in by_layer[layer]]
    assert flow.features(kinds=("mlp",)) == [FeatureId.parse("3/mlp/11")]
    assert flow.nodes_per_layer()[3] == {"res": 1, "mlp": 1, "att": 1}


def test_bad_seeds_are_refused(planted):
    with pytest.raises(SiteError, match="no SAE at 9/res"):
        build_flow_graph(planted, "9/res/1")
    with pytest.raises(ValueError, match="must be a residual feature"):
        build_flow_graph(planted, "3/mlp/11")
    with pytest.raises(SiteError, match="valid indices are 0..127"):
        build_flow_graph(planted, "3/res/500")


def test_exports_round_trip_and_render(planted, tmp_path):
    labels = {"3/res/5": "a<b & 'c'", "3/mlp/11": "experiment"}
    flow = build_flow_graph(planted, "3/res/5", labels=labels)
    for suffix in ("json", "graphml", "png", "svg", "html"):
        assert flow.save(tmp_path / f"flow.{suffix}").stat().st_size > 0
    data = json.loads((tmp_path / "flow.json").read_text())
    assert "links" in data and data["graph"]["seed"] == "3/res/5"
    for reloaded in (FlowGraph.load(tmp_path / "flow.json"), FlowGraph.load(tmp_path / "flow.graphml")):
        assert nx.utils.graphs_equal(reloaded.graph, flow.graph)  # nodes, edges and every attribute
        assert reloaded.span == (2, 3) and reloaded.seed == FeatureId.parse("3/res/5")
    page = (tmp_path / "flow.html").read_text()
    assert not re.search(r"https?://|//cdn|\bsrc=|\bhref=|@import", page)
    assert "a&lt;b &amp; &#x27;c&#x27;" in page and "<script>" in page
    assert flow._repr_png_().startswith(b"\x89PNG") and 'class="fs-flow"' in flow._repr_html_()
    assert (tmp_path / "flow.svg").read_text().lstrip().startswith("<?xml")


def test_flow_reads_saelens_folders_through_saebank(planted, tmp_path):
    save_bank({s: planted[s] for s in [Site(2, "resid_post"), Site(3, "mlp_out")]}, tmp_path / "bank")
    loaded = SAEBank.load(tmp_path / "bank")
    assert sorted(loaded) == [Site(2, "resid_post"), Site(3, "mlp_out")]
    assert torch.equal(loaded[Site(3, "mlp_out")].W_dec, planted[Site(3, "mlp_out")].W_dec)
    assert predecessor_sites(loaded, Site(3, "resid_post")) == {"res": Site(2, "resid_post"), "mlp": Site(3, "mlp_out")}


def test_the_embedding_stream_is_the_previous_residual_of_layer_0():
    bank = {
        Site(0, "resid_pre"): None,
        Site(0, "resid_post"): None,
        Site(0, "mlp_out"): None,
        Site(1, "resid_post"): None,
    }
    assert predecessor_sites(bank, Site(0, "resid_post")) == {"res": Site(0, "resid_pre"), "mlp": Site(0, "mlp_out")}
    assert predecessor_sites(bank, Site(1, "resid_post")) == {"res": Site(0, "resid_post")}
    assert predecessor_sites(bank, Site(0, "resid_pre")) == {}
