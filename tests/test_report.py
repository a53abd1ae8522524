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
    stats = {"targets": 100, "no_active_predecessor": 0, "success_rate_all_targets": 0.3}
    summary = {
        "top1": stats | {"success_rate": 0.30, "mean_activation_change": 0.45},
        "random_top5": stats | {"success_rate": 0.10, "mean_activation_change": 0.20},
    }
    data = {"settings": {"layers": [7], "texts_used": 3}, "summary": summary,
            "comparison": {"top1_beats_random_top5": {"success_rate": True}}}
    (tmp_path / "flow_deactivation.json").write_text(json.dumps(data))
    out = report.main(["--results", str(tmp_path), "--out", str(tmp_path / "REPORT.md")])
    text = out.read_text()
    assert "| 0.45 / 30% (100 targets) | no |" in text  # top-1 against the paper's 0.75 / 65%
    assert "top-1 30% vs random-of-top-5 10% success | yes" in text
    assert "run `python analyses/flow_groups.py`" in text and "run `python analyses/refusal_compare.py`" in text
    assert all(line.count("|") == 7 for line in text.splitlines() if line.startswith("| ") and "claim" not in line)
