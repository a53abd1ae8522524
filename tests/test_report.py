"""REPORT.md is assembled only from result files: present ones give numbers, absent ones say which script to run."""

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "analyses" / "report.py"


def load_report_module():
    spec = importlib.util.spec_from_file_location("report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_report_uses_result_files_and_names_missing_ones(tmp_path):
    report = load_report_module()
    def est(value, low, high):
        return {"value": value, "low": low, "high": high, "n": 10, "kind": "cluster_bootstrap"}

    table = {
        "top1": {"n": 100, "success_rate": est(0.30, 0.2, 0.4), "mean_activation_change": est(0.45, 0.4, 0.5)},
        "random_top5": {"n": 100, "success_rate": est(0.10, 0.05, 0.15), "mean_activation_change": est(0.2, 0.1, 0.3)},
    }
    paired = {"n": 100, "success_rate": {"difference": est(0.2, 0.1, 0.3), "verdict": "top1 better"}}
    summary = {"all_targets": table, "top1_vs_random_top5": {"all_targets": paired}}
    data = {"settings": {"layers": [7], "texts_used": 3}, "summary": summary}
    (tmp_path / "flow_deactivation.json").write_text(json.dumps(data))
    out = report.main(["--results", str(tmp_path), "--out", str(tmp_path / "REPORT.md")])
    text = out.read_text()
    assert "| 0.45 [0.40, 0.50] / 30% [20%, 40%] (100 targets, all targets) | no |" in text  # paper: 0.75 / 65%
    assert "top-1 30% [20%, 40%] vs random-of-top-5 10% [5%, 15%] success (top1 better) | yes" in text
    assert "run `python analyses/flow_groups.py`" in text and "run `python analyses/refusal_compare.py`" in text
    assert all(line.count("|") == 7 for line in text.splitlines() if line.startswith("| ") and "claim" not in line)
