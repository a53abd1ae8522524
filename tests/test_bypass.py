"""flowsteer.refusal.bypass and ``flowsteer refusal`` on the tiny random model (pipeline correctness, not results)."""

from __future__ import annotations

import json

import pytest
import torch

from flowsteer.cli import main
from flowsteer.invertible import InvertibleIntervention
from flowsteer.invertible.maps import aligned_iresnet_map, das_map, rotation_from
from flowsteer.models import post_instruction_positions
from flowsteer.models.tiny import TINY_MODEL
from flowsteer.patching import run_with_patches
from flowsteer.patching.patch import PositionRange
from flowsteer.refusal.bypass import (
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


def test_methods_patch_where_they_should(tiny, prompts):
    direction = linear_direction(tiny, prompts, [1])
    assert direction.layer == 1 and direction.position in post_instruction_positions(tiny)
    assert direction.selection["layers_scored"] == [1]
    positions = post_instruction_positions(tiny)
    nonlinear = fit_method(tiny, "nonlinear", prompts, direction, steps=2)
    assert len(nonlinear.patches) == len(positions)
    assert {p.positions for p in nonlinear.patches} == {(p,) for p in positions}
    assert all(isinstance(p.intervention, InvertibleIntervention) for p in nonlinear.patches)
    assert all(bound <= 0.9 + 1e-6 for bound in nonlinear.details["lipschitz_bounds"])
    shift = fit_method(tiny, "nonlinear_shift", prompts, direction, steps=2)
    assert len(shift.patches) == 1 and shift.patches[0].positions == PositionRange(1, None)
    assert shift.details["latent_shift"] > 0
    check = delta_zero_check(tiny, shift, prompts.harmful_train[:2])
    assert check["max_abs_logit_difference"] <= 1e-4
    ablation = fit_method(tiny, "directional_ablation", prompts, direction)
    assert len(ablation.patches) == 3 * tiny.cfg.n_layers
    with pytest.raises(ValueError, match="unknown method"):
        fit_method(tiny, "magic", prompts, direction)
    # The trained map edits only the post-instruction tokens of the prompt.
    text = prompts.harmful_train[:2]
    clean, patched = run_with_patches(tiny, text), run_with_patches(tiny, text, nonlinear.patches)
    first = min(positions)
    assert torch.equal(clean[:, : first - 1], patched[:, : first - 1])


def test_compare_reports_every_metric_and_the_round_trip(tiny, prompts):
    comparison = compare_bypass(
        tiny,
        prompts,
        methods=("actadd", "das", "innsteer"),
        selection_layers=[1],
        steps=2,
        flow_steps=3,
        max_new_tokens=3,
        n_paragraphs=1,
        log=lambda *_: None,
    )
    results = comparison["results"]
    assert list(results) == ["baseline", "actadd", "das", "innsteer"]
    for name in ("actadd", "das", "innsteer"):
        r = results[name]
        assert 0 <= r["harmful"]["refusal_rate"] <= 1 and 0 <= r["harmless"]["refusal_rate"] <= 1
        assert r["kl_harmless"] >= 0 and r["magnitude"]["mean_delta_norm"] > 0
    actadd = results["actadd"]["magnitude"]
    assert actadd["mean_delta_norm_ratio_to_actadd"] == 1.0
    assert actadd["fraction_changed"] == pytest.approx(1 / tiny.cfg.n_layers)
    assert results["das"]["magnitude"]["fraction_changed"] < actadd["fraction_changed"]
    assert "magnitude" not in results["baseline"] and results["baseline"]["kl_harmless"] == pytest.approx(0, abs=1e-6)
    for check in comparison["delta_zero_check"].values():
        assert check["max_abs_logit_difference"] <= 1e-4 and check["within_1e-4"]
    assert results["innsteer"]["fit"]["alpha"] in [row["alpha"] for row in results["innsteer"]["fit"]["alpha_sweep"]]
    table = markdown_table(comparison)
    assert table.count("\n") == 5 and "| das |" in table
    json.dumps(comparison)  # JSON-able as written by the CLI and the analysis


def test_cli_refusal_compare_writes_json(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    args = [
        "refusal",
        "--model",
        TINY_MODEL,
        "--device",
        "cpu",
        "--method",
        "nonlinear",
        "--layer",
        "2",
        "--n-train",
        "6",
        "--n-test",
        "3",
        "--steps",
        "2",
        "--paragraphs",
        "1",
        "--no-generate",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| nonlinear |" in printed and "δ = 0 round trip, nonlinear" in printed
    written = json.loads(out.read_text())
    assert written["layer"] == 2 and set(written["results"]) == {"baseline", "nonlinear"}
    assert "refusal_rate" not in written["results"]["nonlinear"]["harmful"]  # --no-generate: log-odds only


def test_cli_refusal_rejects_a_layer_outside_the_model(capsys):
    code = main(["refusal", "--model", TINY_MODEL, "--device", "cpu", "--compare", "--layer", "9"])
    assert code == 2 and "outside the model's layers 0..3" in capsys.readouterr().err


def test_demo_section_compares_linear_and_nonlinear(tiny, tmp_path):
    from flowsteer.demo import DemoContext, refusal_bypass

    context = DemoContext(tmp_path, tiny)
    refusal_bypass.run(context, model_name=TINY_MODEL, layer=1, n_train=4, n_val=2, n_test=2, steps=1)
    text = "\n".join(context.lines)
    assert "| actadd |" in text and "| nonlinear |" in text and "δ = 0 round trip: max |Δlogit| 0.0e+00" in text


def test_demo_section_skips_an_unbuilt_organism(tiny, tmp_path, monkeypatch):
    from flowsteer.demo import DemoContext, refusal_bypass
    from flowsteer.models.loading import ModelLoadError

    def missing(*args, **kwargs):
        raise ModelLoadError("not built")

    monkeypatch.setattr(refusal_bypass, "load_model", missing)
    context = DemoContext(tmp_path, tiny)
    refusal_bypass.run(context)
    assert any(line.startswith("Skipped: the refusal organism") for line in context.lines)
