"""flowsteer.refusal.bypass and ``flowsteer refusal`` on the tiny random model (pipeline correctness, not results)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from flowsteer.cli import main
from flowsteer.evals import JudgeCalibration
from flowsteer.invertible import InvertibleIntervention
from flowsteer.invertible.maps import aligned_iresnet_map, das_map, rotation_from
from flowsteer.models import post_instruction_positions
from flowsteer.models.tiny import TINY_MODEL
from flowsteer.patching import run_with_patches
from flowsteer.patching.patch import PositionRange
from flowsteer.refusal.bypass import (
    BypassJudge,
    BypassSettings,
    bypass_prompts,
    compare_bypass,
    delta_zero_check,
    fit_method,
    linear_direction,
    markdown_table,
    spread,
)


@pytest.fixture(scope="module")
def prompts(tiny):
    return bypass_prompts(tiny, n_train=8, n_val=4, n_test=4)


def test_spread_takes_evenly_spaced_items():
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8]
    assert spread([1, 2], None) == [1, 2] and spread([1, 2], 7) == [1, 2]
    with pytest.raises(ValueError, match="at least one"):
        spread([1, 2], 0)


def test_rotation_starts_along_the_direction():
    direction = torch.randn(32)
    rotation = rotation_from(direction)
    assert torch.allclose(rotation @ rotation.T, torch.eye(32, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(rotation[0], direction.double() / direction.norm(), atol=1e-12)
    h = torch.randn(5, 32, dtype=torch.float64)
    assert torch.allclose(das_map(direction)(h)[:, 0], h @ (direction.double() / direction.norm()), atol=1e-10)


def test_aligned_iresnet_map_is_invertible_and_standardises_first(tiny):
    rows = torch.randn(64, 64) * 3 + 1
    f = aligned_iresnet_map(torch.randn(64), rows)
    h = rows[:8].double()
    with torch.no_grad():
        assert float((f.inverse(f(h)) - h).norm() / h.norm()) < 1e-10
    assert [type(layer).__name__ for layer in f.layers] == ["ActNorm", "Orthogonal", "IResBlock", "IResBlock"]


OPEN_JUDGE_BOUNDS = dict(nll_bound=math.inf, repetition_bound=1.0, pmi_bound=-math.inf)


@pytest.fixture(scope="module")
def judge(tiny):
    """The tiny model judges its own replies with bounds that let every non-empty, non-refusal reply through."""
    calibration = JudgeCalibration(**OPEN_JUDGE_BOUNDS, pool=("Name a colour.", "Describe a cat.", "What is rain?",
                                                               "How do I sleep?", "Write a line.", "Count to 3."))
    return BypassJudge(tiny, calibration)


def test_methods_patch_where_they_should(tiny, prompts):
    direction = linear_direction(tiny, prompts, [1])
    assert direction.layer == 1 and direction.position in post_instruction_positions(tiny)
    assert direction.selection["layers_scored"] == [1]
    positions = post_instruction_positions(tiny)
    tiny_steps = BypassSettings(steps=2, flow_steps=3)
    nonlinear = fit_method(tiny, "nonlinear", prompts, direction, {"magnitude_weight": 1.0}, tiny_steps)
    assert len(nonlinear.patches) == len(positions)
    assert {p.positions for p in nonlinear.patches} == {(p,) for p in positions}
    assert all(isinstance(p.intervention, InvertibleIntervention) for p in nonlinear.patches)
    assert all(bound <= 0.9 + 1e-6 for bound in nonlinear.details["lipschitz_bounds"])
    shift = fit_method(tiny, "nonlinear_shift", prompts, direction, {"magnitude_weight": 1.0}, tiny_steps)
    assert len(shift.patches) == 1 and shift.patches[0].positions == PositionRange(1, None)
    assert shift.details["latent_shift"] > 0
    check = delta_zero_check(tiny, shift, prompts.harmful_train[:2])
    assert check["max_abs_logit_difference"] <= 1e-4
    ablation = fit_method(tiny, "directional_ablation", prompts, direction, {})
    assert len(ablation.patches) == 3 * tiny.cfg.n_layers
    weak, strong = (fit_method(tiny, "actadd", prompts, direction, {"strength": s}) for s in (0.5, 2.0))
    assert weak.patches[0].intervention.scale == -0.5 and strong.patches[0].intervention.scale == -2.0
    cache: dict = {}
    low, high = (fit_method(tiny, "innsteer", prompts, direction, {"alpha": a}, tiny_steps, innsteer_cache=cache)
                 for a in (0.5, 2.0))
    assert low.patches[0].intervention.bijection is high.patches[0].intervention.bijection  # one flow fit
    assert low.patches[0].intervention.target.alpha == 0.5 and high.patches[0].intervention.target.alpha == 2.0
    with pytest.raises(ValueError, match="unknown method"):
        fit_method(tiny, "magic", prompts, direction, {})
    # The trained map edits only the post-instruction tokens of the prompt.
    text = prompts.harmful_train[:2]
    clean, patched = run_with_patches(tiny, text), run_with_patches(tiny, text, nonlinear.patches)
    first = min(positions)
    assert torch.equal(clean[:, : first - 1], patched[:, : first - 1])
    assert not torch.allclose(clean[:, -1], patched[:, -1])


def test_compare_selects_on_validation_and_reports_every_metric(tiny, prompts, judge):
    direction = linear_direction(tiny, prompts, [1])
    settings = BypassSettings(actadd_strength=(0.5, 4.0), magnitude_weight=(0.1, 1.0), innsteer_alpha=(0.5, 1.0),
                              steps=2, flow_steps=3)
    result = compare_bypass(tiny, prompts, direction, judge, methods=("actadd", "directional_ablation", "das",
                            "innsteer"), settings=settings, max_new_tokens=3, n_paragraphs=1)
    rows = {row["method"]: row for row in result["comparison"]["rows"]}
    assert list(rows) == ["baseline", "actadd", "directional_ablation", "das", "innsteer"]
    assert rows["actadd"]["settings_tried"] == 2 and rows["directional_ablation"]["settings_tried"] == 1
    assert [entry["setting"] for entry in rows["actadd"]["selection"]] == [{"strength": 0.5}, {"strength": 4.0}]
    assert rows["actadd"]["setting"] in ({"strength": 0.5}, {"strength": 4.0})
    for name in ("actadd", "das", "innsteer", "directional_ablation"):
        estimates = rows[name]["estimates"]
        for key in ("attack_success", "refused", "complied", "over_refused", "kl_harmless", "ce_paragraphs",
                    "delta_norm_per_token", "delta_norm_per_edit"):
            assert estimates[key]["low"] <= estimates[key]["value"] <= estimates[key]["high"], (name, key)
        assert estimates["delta_norm_per_token"]["value"] > 0
    assert rows["baseline"]["estimates"]["kl_harmless"]["value"] == pytest.approx(0, abs=1e-6)
    assert rows["baseline"]["estimates"]["delta_norm_per_token"]["value"] == 0
    # ActAdd edits one site per token, ablation 3 per layer: per token it is the larger intervention here.
    ablation = result["magnitude_ratio_to_actadd"]["directional_ablation"]
    assert set(ablation) == {"delta_norm_per_token", "delta_norm_per_edit"}
    for check in result["delta_zero_check"].values():
        assert check["max_abs_logit_difference"] <= 1e-4 and check["within_1e-4"]
    assert set(result["delta_zero_check"]) == {"das", "innsteer"}
    assert len(result["replies"]["das"]["harmful"]) == len(prompts.harmful_test)
    table = markdown_table(result)
    assert table.count("\n") == 6 and "| das | 2 | magnitude_weight=" in table
    json.dumps(result)  # JSON-able as written by the CLI and the analysis


def test_cli_refusal_compare_writes_json(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    args = ["refusal", "--model", TINY_MODEL, "--device", "cpu", "--method", "nonlinear", "--layer", "2",
            "--n-train", "6", "--n-val", "3", "--n-test", "3", "--steps", "2", "--paragraphs", "1",
            "--max-new-tokens", "3", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| nonlinear |" in printed and "δ = 0 round trip, nonlinear" in printed
    written = json.loads(out.read_text())
    assert written["direction"]["layer"] == 2
    assert [row["method"] for row in written["comparison"]["rows"]] == ["baseline", "nonlinear"]
    assert written["reference_model"] == TINY_MODEL  # a model judged against itself when it is not the organism


def test_cli_refusal_rejects_a_layer_outside_the_model(capsys):
    code = main(["refusal", "--model", TINY_MODEL, "--device", "cpu", "--compare", "--layer", "9"])
    assert code == 2 and "outside the model's layers 0..3" in capsys.readouterr().err


def test_demo_section_compares_linear_and_nonlinear(tiny, tmp_path):
    from flowsteer.demo import DemoContext, refusal_bypass

    context = DemoContext(tmp_path, tiny)
    refusal_bypass.run(context, model_name=TINY_MODEL, layer=1, n_train=4, n_val=2, n_test=2, steps=1,
                       max_new_tokens=3)
    text = "\n".join(context.lines)
    assert "| actadd |" in text and "| nonlinear |" in text and "δ = 0 round trip: max |Δlogit| 0.0e+00" in text
    assert text.count("- **nonlinear** (") == 2  # two replies shown


def test_demo_section_skips_an_unbuilt_organism(tiny, tmp_path, monkeypatch):
    from flowsteer.demo import DemoContext, refusal_bypass
    from flowsteer.models.loading import ModelLoadError

    def missing(*args, **kwargs):
        raise ModelLoadError("not built")

    monkeypatch.setattr(refusal_bypass, "load_model", missing)
    context = DemoContext(tmp_path, tiny)
    refusal_bypass.run(context)
    assert any(line.startswith("Skipped: the refusal organism") for line in context.lines)
