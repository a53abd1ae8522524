"""Refusal bypass on the refusal organism: linear baselines vs invertible-map interventions, under the comparison
protocol, judged by the reply judge.

    python analyses/refusal_compare.py --part compare     # analyses/results/refusal_compare.json and .md
    python analyses/refusal_compare.py --part sweep       # analyses/results/refusal_layer_sweep.json and .md

``compare``: difference-in-means directions from the training prompts at every post-instruction position of every
layer below 0.8·n_layers, Arditi's selection (bypass / induce / KL filters, the KL threshold relaxed step by step
when nothing passes) on the validation prompts; then, at the selected layer, every method of
`flowsteer.refusal.bypass.METHODS` under `compare_bypass`: the same budget of settings each, chosen on the
validation prompts by attack success (not refused, coherent and on topic, judged against the unpatched base model),
reported once on the held-out test prompts beside the baseline, with 95% intervals, KL, cross-entropy, Σ‖Δh‖ per
token (the headline size) and ‖Δh‖ per edit with their ratios to ActAdd, and the δ = 0 round trip of every map.

``sweep``: at **every** layer, the difference-in-means direction at the compare part's position, ActAdd (strength 1)
and the i-ResNet map (magnitude weight 1), judged by refusal log-odds on the test prompts (no generation): the
refusal rate, KL and ‖Δh‖ per layer, the best layer and whether it lies at an edge of the sweep.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from safetensors import safe_open

from flowsteer.evals import last_position_logits, next_token_kl, rate
from flowsteer.evals.intervals import mean
from flowsteer.evals.judge import default_calibration
from flowsteer.evals.magnitude import per_token_delta_norms
from flowsteer.models import DEFAULT_MODEL, REFUSAL_ORGANISM, load_model
from flowsteer.models.chat import chat_prompts
from flowsteer.patching import EffectLog
from flowsteer.paths import atomic_path, write_json
from flowsteer.refusal.bypass import (
    BypassJudge,
    BypassSettings,
    LinearDirection,
    bypass_prompts,
    compare_bypass,
    fit_method,
    linear_direction,
    markdown_table,
)
from flowsteer.refusal.logodds import refusal_log_odds, refusal_token_ids
from flowsteer.refusal.organism.cache import organism_dir, read_manifest
from flowsteer.refusal.prompts import calibration_instructions
from flowsteer.steering.contrast import diff_in_means
from flowsteer.steering.vector_files import load_vector, save_vector

RESULTS = Path(__file__).resolve().parent / "results"


def model_build() -> dict:
    """Which organism build ran (its adapter's sha256, recipe version, source)."""
    manifest = read_manifest(organism_dir())
    return {"recipe_version": manifest["recipe_version"], "source": manifest.get("source"),
            "adapter_sha256": manifest.get("adapter", {}).get("sha256"), "created": manifest.get("created")}


def write_markdown(path: Path, title: str, body: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"# {title}\n\n{body}\n")


def reused_direction(path: Path, model) -> LinearDirection:
    """The direction an earlier ``--part compare`` selected and saved (its layer, position and rule in the file)."""
    with safe_open(path, "pt") as handle:
        meta = handle.metadata() or {}
    if "layer" not in meta or "position" not in meta:
        raise ValueError(f"{path} has no layer/position metadata: it was not written by --part compare")
    selection = {"rule": meta.get("rule", "selected by an earlier run"), "reused_from": str(path)}
    return LinearDirection(load_vector(path, model.cfg.d_model), int(meta["layer"]), int(meta["position"]), selection)


def compare_part(model, reference, prompts, args) -> None:
    start = time.perf_counter()
    if args.reuse_direction:
        direction = reused_direction(args.reuse_direction, model)
    else:
        layers = list(range(int(0.8 * model.cfg.n_layers)))
        direction = linear_direction(model, prompts, layers)
        save_vector(RESULTS / "refusal_direction.safetensors", direction.direction, layer=str(direction.layer),
                    position=str(direction.position), rule=direction.selection["rule"])
    print(f"direction: layer {direction.layer}, position {direction.position}, {direction.selection['rule']} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    settings = BypassSettings(steps=args.steps, flow_steps=args.flow_steps)
    judge = BypassJudge(reference, default_calibration(reference, calibration_instructions()))
    result = compare_bypass(model, prompts, direction, judge, settings=settings, max_new_tokens=args.max_new_tokens,
                            n_paragraphs=args.paragraphs, seed=args.seed)
    result |= {"analysis": "refusal bypass under the comparison protocol", "model_build": model_build(),
               "script": "analyses/refusal_compare.py --part compare", "total_seconds": time.perf_counter() - start}
    write_json(RESULTS / "refusal_compare.json", result)
    table = markdown_table(result)
    checks = "\n".join(f"- δ = 0 round trip, {name}: max |Δlogit| = {c['max_abs_logit_difference']:.2e}"
                       for name, c in result["delta_zero_check"].items())
    header = (f"Model `{result['model']}`, replies judged against `{result['reference_model']}`; direction at layer "
              f"{direction.layer}, position {direction.position} ({direction.selection['rule']}); prompts "
              f"{result['prompts']}. Settings chosen on validation by attack success, reported once on test; 95% "
              "intervals in brackets. From `analyses/refusal_compare.py --part compare`.")
    write_markdown(RESULTS / "refusal_compare.md", "Refusal bypass comparison", f"{header}\n\n{table}\n\n{checks}")
    print(table, checks, sep="\n")


def sweep_part(model, prompts, args) -> None:
    start = time.perf_counter()
    compare = json.loads((RESULTS / "refusal_compare.json").read_text())
    position = compare["direction"]["position"]
    layers = list(range(model.cfg.n_layers))
    means = diff_in_means(model, prompts.harmful_train, prompts.harmless_train, positions=[position], layers=layers)
    harmful = chat_prompts(model, [item.text for item in prompts.harmful_test])
    harmless = chat_prompts(model, [item.text for item in prompts.harmless_test])
    ids = refusal_token_ids(model)
    reference = last_position_logits(model, harmless)
    baseline = refusal_log_odds(last_position_logits(model, harmful), ids)
    rows = []
    for layer in layers:
        vector = means.direction(position, layer)
        if not bool(vector.norm() > 0):
            rows.append({"layer": layer, "skipped": "the difference in means is zero at this position"})
            continue
        direction = LinearDirection(vector, layer, position, {"rule": f"difference in means at position {position}"})
        row = {"layer": layer}
        for name, setting in (("actadd", {"strength": 1.0}), ("nonlinear", {"magnitude_weight": 1.0})):
            steering = fit_method(model, name, prompts, direction, setting,
                                  BypassSettings(steps=args.sweep_steps), seed=args.seed)
            record = EffectLog()
            log_odds = refusal_log_odds(last_position_logits(model, harmful, steering.patches, record=record), ids)
            kl = next_token_kl(reference, last_position_logits(model, harmless, steering.patches))
            row[name] = {
                "log_odds_refusal": rate([bool(x > 0) for x in log_odds.tolist()]).to_dict(),
                "kl_harmless": mean(kl.tolist()).to_dict(),
                "delta_norm_per_token": mean(per_token_delta_norms(record).tolist()).to_dict(),
            }
        rows.append(row)
        print(f"layer {layer}: " + ", ".join(f"{m} refused {row[m]['log_odds_refusal']['value']:.2f} KL "
                                             f"{row[m]['kl_harmless']['value']:.3f}" for m in ("actadd", "nonlinear")),
              flush=True)
    scored = [row for row in rows if "skipped" not in row]
    def rank(row: dict, method: str) -> tuple[float, float]:
        return row[method]["log_odds_refusal"]["value"], row[method]["kl_harmless"]["value"]

    best = {m: min(scored, key=lambda row, m=m: rank(row, m))["layer"] for m in ("actadd", "nonlinear")}
    result = {
        "analysis": "layer sweep: ActAdd vs the i-ResNet map at every layer, refusal log-odds, KL and Σ‖Δh‖ per token",
        "model": REFUSAL_ORGANISM, "model_build": model_build(), "position": position, "layers": layers,
        "baseline_log_odds_refusal": rate([bool(x > 0) for x in baseline.tolist()]).to_dict(),
        "rows": rows, "best_layer": best,
        "best_at_edge": {m: layer in (layers[0], layers[-1]) for m, layer in best.items()},
        "seconds": time.perf_counter() - start,
    }
    write_json(RESULTS / "refusal_layer_sweep.json", result)
    lines = ["| layer | method | harmful refused (log-odds > 0) | KL harmless | Σ‖Δh‖ per token |",
             "|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['layer']} | – | {row['skipped']} | – | – |")
            continue
        for m in ("actadd", "nonlinear"):
            cells = [_cell(row[m][k]) for k in ("log_odds_refusal", "kl_harmless", "delta_norm_per_token")]
            lines.append(f"| {row['layer']} | {m} | " + " | ".join(cells) + " |")
    summary = (f"Best layer (lowest refusal rate, then KL): ActAdd {best['actadd']}, i-ResNet map {best['nonlinear']}; "
               f"at an edge of the sweep: {result['best_at_edge']}. Baseline refusal (log-odds > 0): "
               f"{_cell(result['baseline_log_odds_refusal'])}.")
    body = summary + "\n\n" + "\n".join(lines)
    write_markdown(RESULTS / "refusal_layer_sweep.md", "Refusal bypass layer sweep", body)
    print(summary)


def _cell(estimate: dict) -> str:
    return f"{estimate['value']:.2f} [{estimate['low']:.2f}, {estimate['high']:.2f}]"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the protocol's selection scores
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["compare", "sweep"], required=True)
    parser.add_argument("--n-train", type=int, default=64, help="training prompts per label")
    parser.add_argument("--n-val", type=int, default=32, help="validation prompts per label (all 32)")
    parser.add_argument("--n-test", type=int, default=100, help="held-out test prompts per label (all 100)")
    parser.add_argument("--steps", type=int, default=80, help="training steps of DAS and the i-ResNet maps")
    parser.add_argument("--flow-steps", type=int, default=300, help="training steps of the INNSteer flow")
    parser.add_argument("--sweep-steps", type=int, default=40, help="training steps of the sweep's i-ResNet maps")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse-direction", type=Path, default=None, metavar="SAFETENSORS",
                        help="skip Arditi's selection: the direction an earlier --part compare saved")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    model = load_model(REFUSAL_ORGANISM, device="cpu")
    prompts = bypass_prompts(model, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
    if args.part == "compare":
        compare_part(model, load_model(DEFAULT_MODEL, device="cpu"), prompts, args)
    else:
        sweep_part(model, prompts, args)


if __name__ == "__main__":
    main()
