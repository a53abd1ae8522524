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
    assert "run `python analyses/flow_groups.py`" in text
    assert "run `python analyses/refusal_compare.py --part compare`" in text
    assert all(line.count("|") == 7 for line in text.splitlines() if line.startswith("| ") and "claim" not in line)


def _estimate(value, low, high, n=40):
    return {"value": value, "low": low, "high": high, "n": n, "kind": "test"}


def test_refusal_rows_read_the_protocol_json(tmp_path):
    report = load_report_module()
    rows = [
        {"method": "baseline", "estimates": {"attack_success": _estimate(0.05, 0.01, 0.16),
                                             "ce_paragraphs": _estimate(2.30, 2.2, 2.4)}},
        {"method": "actadd", "estimates": {"attack_success": _estimate(0.70, 0.55, 0.82),
                                           "ce_paragraphs": _estimate(2.50, 2.4, 2.6)}},
        {"method": "directional_ablation", "estimates": {"attack_success": _estimate(0.60, 0.52, 0.74),
                                                         "ce_paragraphs": _estimate(2.40, 2.3, 2.5)}},
        {"method": "nonlinear", "estimates": {"attack_success": _estimate(0.20, 0.10, 0.35)}},
    ]
    data = {"model": "organism", "reference_model": "base", "prompts": {"harmful_test": 40},
            "direction": {"layer": 12, "position": -1, "selection": {"rule": "Arditi's filters"}},
            "comparison": {"protocol": {"budget": 3, "select": "attack_success", "splits": ["val", "test"]},
                           "rows": rows},
            "magnitude_ratio_to_actadd": {"nonlinear": {"delta_norm_per_token": _estimate(0.5, 0.4, 0.6),
                                                        "delta_norm_per_edit": _estimate(2.0, 1.5, 2.5)}}}
    (tmp_path / "refusal_compare.json").write_text(json.dumps(data))
    sweep = {"layers": list(range(30)), "best_layer": {"actadd": 29}, "best_at_edge": {"actadd": True},
             "rows": [{"layer": 29, "actadd": {"log_odds_refusal": _estimate(0.1, 0.05, 0.2),
                                               "kl_harmless": _estimate(0.3, 0.2, 0.4)}}]}
    (tmp_path / "refusal_layer_sweep.json").write_text(json.dumps(sweep))
    text = report.main(["--results", str(tmp_path), "--out", str(tmp_path / "REPORT.md")]).read_text()
    # baseline / ablation / ActAdd attack success with intervals; ActAdd's and ablation's lower bounds exceed 0.5
    assert "| 0.05 [0.01, 0.16] / 0.60 [0.52, 0.74] / 0.70 [0.55, 0.82] | yes |" in text
    assert "attack success nonlinear 0.20 [0.10, 0.35] vs actadd 0.70 [0.55, 0.82] | no |" in text
    assert "nonlinear 0.500 [0.400, 0.600] (per edit 2.000 [1.500, 2.500])" in text
    assert "actadd: layer 29 of 0-29 (at the edge of the sweep)" in text
    assert "| 2.300 [2.200, 2.400] / 2.400 [2.300, 2.500] / 2.500 [2.400, 2.600] | yes |" in text
