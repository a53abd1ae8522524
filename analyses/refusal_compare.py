"""Refusal bypass on the refusal organism: linear baselines vs invertible-map interventions, one table.

Parts, each one CPU job (``--part``): ``direction`` selects the direction and evaluates some methods,
``methods`` evaluates more methods with the saved direction, ``sweep`` runs the layer sweep, ``table`` merges
the per-method files into one JSON and markdown table (no model). What they do:

1. Difference-in-means directions from the training prompts at every post-instruction position of
   ``--selection-layers``, Arditi's selection (bypass / induce / KL filters) on the validation prompts.
2. At the selected layer: ActAdd (``h - r`` on every token), directional ablation (every layer, every token),
   DAS (rotation, first coordinate replaced), the i-ResNet map (ActNorm -> rotation -> 2 i-ResNet blocks,
   first coordinate replaced), both trained by interchange (harmful base, harmless source) to lower the
   refusal log-odds with a magnitude penalty and applied with the harmless mean latent per position, and
   INNSteer (coupling flow, per-position latent translation, α chosen on validation prompts).
3. Each on held-out test prompts: refusal (substring judge on greedy replies, and log-odds), over-refusal of
   harmless prompts, KL on harmless prompts, cross-entropy on plain paragraphs, ||Δh|| (absolute, relative,
   Σ per token, fraction of (layer, position) locations changed) and its ratio to ActAdd's; the δ = 0 round
   trip of every trained map.

Part ``sweep``: at each of ``--sweep-layers``, the difference-in-means direction at the main comparison's
position (or, without a saved direction, the one selected among that layer's post-instruction positions),
ActAdd and the i-ResNet map, judged by log-odds only (no generation).

Per-method results go to ``analyses/results/refusal_compare/`` (one JSON each, the direction beside them);
``--part table`` writes ``analyses/results/refusal_compare.json`` and ``.md``; the sweep writes
``refusal_layer_sweep.json`` and ``.md``. Run through the CPU queue, e.g.
``cpu-run python analyses/refusal_compare.py --part direction --methods baseline,actadd,nonlinear``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from flowsteer.evals import last_position_logits
from flowsteer.models import REFUSAL_ORGANISM, load_model
from flowsteer.models.chat import chat_prompts
from flowsteer.paths import atomic_path, write_json
from flowsteer.refusal.bypass import (
    LinearDirection,
    bypass_prompts,
    compare_bypass,
    delta_zero_check,
    evaluate_steering,
    fit_method,
    linear_direction,
    markdown_table,
    ratios_to,
)
from flowsteer.refusal.bypass.compare import summary_line
from flowsteer.refusal.organism.cache import organism_dir, read_manifest
from flowsteer.refusal.selection import DirectionScores
from flowsteer.steering.contrast import diff_in_means
from flowsteer.steering.vector_files import load_vector, save_vector

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analyses" / "results"


def model_build(model_name: str) -> str:
    """Which build of ``model_name`` ran: the organism's manifest (recipe version, creation time), so that
    per-method files from an older build of the same name are not merged or resumed silently."""
    if model_name != REFUSAL_ORGANISM:
        return model_name
    manifest = read_manifest(organism_dir())
    return f"{model_name} recipe v{manifest['recipe_version']} built {manifest['created']}"


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def write_markdown(path: Path, title: str, body: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(f"# {title}\n\n{body}\n")


def sweep_table(rows: list[dict]) -> str:
    lines = [
        "| layer | position | method | harmful log-odds > 0 | mean log-odds | harmless log-odds > 0 | KL harmless | "
        "mean ‖Δh‖ | mean ‖Δh‖/‖h‖ | Σ‖Δh‖ per token | ‖Δh‖ / ActAdd's | Σ‖Δh‖ per token / ActAdd's |",
        "|" + "---|" * 12,
    ]
    for row in rows:
        for name in ("baseline", "actadd", "nonlinear"):
            r = row["results"][name]
            m = r.get("magnitude", {})
            lines.append(
                f"| {row['layer']} | {row['position']} | {name} | {r['harmful']['log_odds_refusal_rate']:.2f} | "
                f"{r['harmful']['log_odds_mean']:+.2f} | {r['harmless']['log_odds_refusal_rate']:.2f} | "
                f"{r['kl_harmless']:.4f} | {m.get('mean_delta_norm', 0):.3f} | {m.get('mean_relative_delta', 0):.4f} | "
                f"{m.get('delta_norm_per_token', 0):.3f} | "
                f"{m.get('mean_delta_norm_ratio_to_actadd', float('nan')):.3f} | "
                f"{m.get('delta_norm_per_token_ratio_to_actadd', float('nan')):.3f} |"
            )
    return "\n".join(lines)


def save_direction(direction: LinearDirection, model_name: str, parts: Path, prompts) -> None:
    save_vector(
        parts / "direction.safetensors",
        direction.direction,
        model=model_name,
        layer=str(direction.layer),
        position=str(direction.position),
    )
    write_json(
        parts / "direction.json",
        {
            "model": model_name,
            "model_build": model_build(model_name),
            "prompts": prompts.sizes(),
            "layer": direction.layer,
            "position": direction.position,
            "norm": float(direction.direction.norm()),
            "selection": direction.selection,
        },
    )


def reused_scores(path: Path, model_name: str, layers: list[int], prompts) -> DirectionScores:
    """The bypass/induce/KL grid saved in an earlier ``direction.json`` of the same build, layers and prompts."""
    meta = json.loads(Path(path).read_text())
    selection = meta["selection"]
    if meta.get("model_build") != model_build(model_name) or selection.get("layers_scored") != layers:
        raise ValueError(
            f"{path} was scored on {meta.get('model_build')} over layers {selection.get('layers_scored')}, not on "
            f"{model_build(model_name)} over {layers}; score again without --reuse-scores"
        )
    if meta.get("prompts", prompts.sizes()) != prompts.sizes():
        raise ValueError(f"{path} was scored with prompts {meta['prompts']}, not {prompts.sizes()}")
    print(f"reusing the selection scores of {path}", flush=True)
    return DirectionScores.from_dict(selection["scores"])


def load_direction(model, model_name: str, parts: Path) -> LinearDirection:
    meta = json.loads((parts / "direction.json").read_text())
    if meta.get("model_build", meta["model"]) != model_build(model_name):
        raise ValueError(
            f"{parts / 'direction.json'} was selected on {meta.get('model_build', meta['model'])}, not on "
            f"{model_build(model_name)}; select again with --part direction"
        )
    vector = load_vector(parts / "direction.safetensors", model.cfg.d_model)
    return LinearDirection(vector, meta["layer"], meta["position"], meta["selection"])


def run_methods(model, prompts, direction: LinearDirection, methods: list[str], args, parts: Path) -> None:
    """Fit and evaluate ``methods`` ("baseline" = no patches); one JSON per method, written as it finishes."""
    harmless = chat_prompts(model, [item.text for item in prompts.harmless_test])
    reference = last_position_logits(model, harmless)
    options = dict(reference=reference, max_new_tokens=args.max_new_tokens, n_paragraphs=args.paragraphs)
    for name in methods:
        start = time.perf_counter()
        if name == "baseline":
            result = evaluate_steering(model, None, prompts, **options)
        else:
            steering = fit_method(
                model,
                name,
                prompts,
                direction,
                steps=args.steps,
                latent_size=args.latent_size,
                magnitude_weight=args.magnitude_weight,
                flow_steps=args.flow_steps,
                seed=args.seed,
            )
            result = evaluate_steering(model, steering, prompts, **options) | {"fit": steering.details}
            if name in ("das", "nonlinear", "nonlinear_shift", "innsteer"):
                check_prompts = chat_prompts(model, [i.text for i in prompts.harmful_test[:8]])
                result["delta_zero_check"] = delta_zero_check(model, steering, check_prompts)
        result["total_seconds"] = time.perf_counter() - start
        result["prompts"] = prompts.sizes()
        result["model"] = args.model
        result["model_build"] = model_build(args.model)
        write_json(parts / f"{name}.json", result)
        print(summary_line(name, result), f"({result['total_seconds']:.0f} s)", flush=True)


def merge_table(results_dir: Path, parts: Path) -> None:
    """The per-method files as one comparison (JSON + markdown)."""
    direction = json.loads((parts / "direction.json").read_text())
    order = ["baseline", "actadd", "directional_ablation", "das", "nonlinear", "nonlinear_shift", "innsteer"]
    results = {
        name: json.loads((parts / f"{name}.json").read_text()) for name in order if (parts / f"{name}.json").is_file()
    }
    builds = {r.get("model_build", r["model"]) for r in results.values()}
    if {r["model"] for r in results.values()} != {direction["model"]} or len(builds) != 1:
        raise ValueError(
            f"per-method results in {parts} come from different models or builds: {sorted(builds)} (direction: "
            f"{direction['model']}); rerun the stale methods with --part methods"
        )
    ratios_to(results)
    comparison = {
        "analysis": "refusal bypass: linear vs invertible-map interventions",
        "model": direction["model"],
        "model_build": builds.pop(),
        "prompts": next(iter(results.values()))["prompts"],
        "direction": direction,
        "layer": direction["layer"],
        "results": results,
        "delta_zero_check": {name: r["delta_zero_check"] for name, r in results.items() if "delta_zero_check" in r},
        "seconds": sum(r["total_seconds"] for r in results.values()),
    }
    write_json(results_dir / "refusal_compare.json", comparison)
    checks = "\n".join(
        f"- δ = 0 round trip, {name}: max |Δlogit| = {c['max_abs_logit_difference']:.2e} "
        f"(logits up to {c['logit_scale']:.1f})"
        for name, c in comparison["delta_zero_check"].items()
    )
    header = (
        f"Model `{comparison['model']}`; direction at layer {direction['layer']}, position {direction['position']} "
        f"(selected among layers {direction['selection'].get('layers_scored')}); prompts {comparison['prompts']}. "
        "From `analyses/refusal_compare.py` (parts direction/methods, then table)."
    )
    table = markdown_table(comparison)
    write_markdown(results_dir / "refusal_compare.md", "Refusal bypass comparison", f"{header}\n\n{table}\n\n{checks}")
    print(table)
    print(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["direction", "methods", "sweep", "table"], required=True)
    parser.add_argument("--model", default=REFUSAL_ORGANISM)
    parser.add_argument("--methods", default="baseline,actadd,directional_ablation,nonlinear")
    parser.add_argument(
        "--selection-layers", default="", help="layers to select among (default: every layer below 0.8 x n_layers)"
    )
    parser.add_argument("--sweep-layers", default="6,9,12,15,18")
    parser.add_argument(
        "--reuse-scores", type=Path, help="direction part: reuse the selection scores of this earlier direction.json"
    )
    parser.add_argument("--n-train", type=int, default=64, help="training prompts per label")
    parser.add_argument("--n-val", type=int, default=24, help="validation prompts per label")
    parser.add_argument("--n-test", type=int, default=40, help="held-out test prompts per label")
    parser.add_argument("--steps", type=int, default=80, help="training steps of DAS and the i-ResNet map")
    parser.add_argument("--flow-steps", type=int, default=300, help="training steps of the INNSteer flow")
    parser.add_argument("--sweep-steps", type=int, default=40)
    parser.add_argument("--latent-size", type=int, default=1)
    parser.add_argument("--magnitude-weight", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--paragraphs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and markdown go")
    args = parser.parse_args()
    parts = args.results / "refusal_compare"
    parts.mkdir(parents=True, exist_ok=True)
    if args.part == "table":
        merge_table(args.results, parts)
        return
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    prompts = bypass_prompts(model, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
    machine = f"{platform.machine()}, torch threads {torch.get_num_threads()}"
    methods = [m for m in args.methods.split(",") if m]
    if args.part == "direction":
        layers = ints(args.selection_layers) or list(range(int(0.8 * model.cfg.n_layers)))
        scores = reused_scores(args.reuse_scores, args.model, layers, prompts) if args.reuse_scores else None
        direction = linear_direction(model, prompts, layers, scores=scores)
        save_direction(direction, args.model, parts, prompts)
        print(
            f"direction: layer {direction.layer}, position {direction.position} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        run_methods(model, prompts, direction, methods, args, parts)
    elif args.part == "methods":
        run_methods(model, prompts, load_direction(model, args.model, parts), methods, args, parts)
    else:
        out = args.results / "refusal_layer_sweep.json"
        previous = json.loads(out.read_text()) if out.is_file() else {}
        build = model_build(args.model)
        rows = previous.get("rows", []) if previous.get("model_build") == build else []  # resume a cut-off sweep
        layers = [layer for layer in ints(args.sweep_layers) if layer not in {row["layer"] for row in rows}]
        carried_seconds = previous.get("seconds", 0.0) if rows else 0.0
        directions: dict[int, LinearDirection | None] = dict.fromkeys(layers)
        if (
            layers and (parts / "direction.json").is_file()
        ):  # the main comparison's position, every sweep layer: one pass
            position = load_direction(model, args.model, parts).position
            means = diff_in_means(
                model, prompts.harmful_train, prompts.harmless_train, positions=[position], layers=layers
            )
            rule = {"rule": f"difference in means at the main comparison's position {position}"}
            directions = {
                layer: LinearDirection(means.direction(position, layer), layer, position, rule) for layer in layers
            }
        for layer in layers:
            if directions[layer] is not None and not bool(directions[layer].direction.norm() > 0):
                print(f"layer {layer}: the difference in means is zero at this position; skipped")
                continue
            comparison = compare_bypass(
                model,
                prompts,
                methods=("actadd", "nonlinear"),
                direction=directions[layer],
                selection_layers=[layer],
                steps=args.sweep_steps,
                latent_size=args.latent_size,
                magnitude_weight=args.magnitude_weight,
                generate=False,
                n_paragraphs=args.paragraphs,
                seed=args.seed,
            )
            rows.append({"layer": layer, "position": comparison["direction"]["position"]} | comparison)
            result = {
                "analysis": "layer sweep: ActAdd vs the i-ResNet map, refusal log-odds and ||Δh||",
                "model": args.model,
                "model_build": build,
                "rows": rows,
                "seconds": time.perf_counter() - start + carried_seconds,
                "machine": machine,
            }
            write_json(out, result)  # after every layer: a cut-off job keeps what it measured
            write_markdown(
                out.with_suffix(".md"),
                "Refusal bypass layer sweep",
                f"Model `{result['model']}`; {result['seconds']:.0f} s on {machine}. From "
                f"`analyses/refusal_compare.py --part sweep`.\n\n{sweep_table(rows)}",
            )
        print(sweep_table(rows))
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
