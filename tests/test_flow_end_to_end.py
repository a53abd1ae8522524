"""The ``flowsteer flow`` command and the flow analyses end to end on a tiny synthetic bank."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from flowsteer.cli import main
from flowsteer.flow.graph import FlowGraph
from flowsteer.models.tiny import TINY_MODEL
from tests.flow_synthetic import persistent_bank, save_bank

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "The cat sat on the mat and looked at the bird.",
    "Rivers flow into the sea, carrying sand and stones.",
    "def double(x):\n    return x * 2",
    "Physics is the study of matter, energy and forces.",
]


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "analyses" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    bank = save_bank(persistent_bank(), root / "bank")
    corpus = root / "texts.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in TEXTS))
    return bank, corpus, root


def test_cli_writes_a_graph_in_every_format_and_statistics(files, capsys):
    bank, corpus, root = files
    outs = [str(root / f"g.{suffix}") for suffix in ("png", "svg", "html", "json", "graphml")]
    args = ["flow", "3/res/5", "--saes", str(bank), "--model", TINY_MODEL, "--device", "cpu", "--corpus", str(corpus)]
    assert main(args + sum((["--out", o] for o in outs), [])) == 0
    assert all(Path(o).stat().st_size > 0 for o in outs)
    flow = FlowGraph.load(root / "g.json")
    assert flow.graph.nodes["3/res/5"]["seed"] and flow.graph.nodes["3/res/5"]["label"]
    assert (bank / "labels" / "labels.json").is_file()  # labels computed once and cached beside the bank
    assert main(["flow", "--stats", "--saes", str(bank), "--out", str(root / "stats")]) == 0
    summary = json.loads((root / "stats" / "flow_stats.json").read_text())
    assert [layer["site"] for layer in summary["layers"]] == ["0/res", "1/res", "2/res", "3/res"]
    assert main(["flow", "--saes", str(bank), "--out", "x.png"]) == 2
    assert "either a seed feature" in capsys.readouterr().err


def test_analyses_run_end_to_end(files):
    bank, corpus, root = files
    out = root / "results"
    common = ["--saes", str(bank), "--out", str(out)]
    model = ["--model", TINY_MODEL]
    stats = script("flow_stats").main(common)
    assert len(stats["layers"]) == 4 and (out / "flow_scores.png").is_file()
    groups = script("flow_groups").main(
        common + model + ["--corpus", f"a={corpus}", "--corpus", f"b={corpus}", "--tokens-per-text", "2"]
    )
    assert set(groups["strategies"]) == {"top1", "top5", "random_top5", "permutation"}
    assert "paper" in groups["strategies"]["top1"]["transition_matrix"]
    assert (out / "flow_transition.png").is_file() and (out / "flow_groups_tests.json").is_file()
    result = script("flow_deactivation").main(
        common
        + model
        + [
            "--corpus",
            str(corpus),
            "--texts",
            "2",
            "--tokens-per-text",
            "1",
            "--max-targets",
            "3",
            "--search-targets",
            "1",
            "--r-values",
            "0",
            "1",
            "--sweep-texts",
            "1",
            "--sweep-targets",
            "1",
        ]
    )
    summary = result["summary"]
    assert len({row["n"] for row in summary["all_targets"].values()}) == 1  # one target set for every strategy
    assert set(summary["searched_targets"]) == {"top1", "top5", "random_top5", "permutation", "greedy", "exhaustive"}
    assert result["settings"]["layers"] == [1, 2, 3] and "all_targets" in summary["top1_vs_random_top5"]
    text = (out / "flow_deactivation.md").read_text()
    assert "n = " in text and summary["definitions"]["success_rate"] in text
    assert (out / "flow_deactivation.png").is_file()
    gallery = script("flow_gallery").main(common + model + ["--corpus", str(corpus), "--n", "2"])
    assert len(gallery["graphs"]) == 2 and (out / "gallery" / "index.html").is_file()
