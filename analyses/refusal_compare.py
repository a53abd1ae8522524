"""Refusal bypass on the refusal organism: linear baselines vs invertible-map interventions, one table.

Part ``main`` (one CPU job, ~10-15 minutes on 2 cores):

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

Part ``sweep`` (a second job): at each of ``--sweep-layers``, the direction selected among that layer's
post-instruction positions, ActAdd and the i-ResNet map, judged by log-odds only (no generation).

Writes ``analyses/results/refusal_compare.json`` (+ ``.md``) or ``refusal_layer_sweep.json`` (+ ``.md``).
Run through the CPU queue: ``cpu-run python analyses/refusal_compare.py --part main``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from flowsteer.bypass import bypass_prompts, compare_bypass, markdown_table
from flowsteer.models import load_model
from flowsteer.models.organisms import REFUSAL_ORGANISM
from flowsteer.paths import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analyses" / "results"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["main", "sweep"], default="main")
    parser.add_argument("--model", default=REFUSAL_ORGANISM)
    parser.add_argument("--selection-layers", default="8,10,12,14")
    parser.add_argument("--sweep-layers", default="6,9,12,15,18")
    parser.add_argument("--n-train", type=int, default=96, help="training prompts per label")
    parser.add_argument("--n-test", type=int, default=48, help="held-out test prompts per label")
    parser.add_argument("--steps", type=int, default=120, help="training steps of DAS and the i-ResNet map")
    parser.add_argument("--sweep-steps", type=int, default=60)
    parser.add_argument("--latent-size", type=int, default=1)
    parser.add_argument("--magnitude-weight", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    prompts = bypass_prompts(model, n_train=args.n_train, n_val=32, n_test=args.n_test)
    machine = f"{platform.machine()}, torch threads {torch.get_num_threads()}"
    if args.part == "main":
        comparison = compare_bypass(
            model,
            prompts,
            selection_layers=ints(args.selection_layers),
            steps=args.steps,
            latent_size=args.latent_size,
            magnitude_weight=args.magnitude_weight,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
        )
        comparison |= {"analysis": "refusal bypass: linear vs invertible-map interventions", "machine": machine}
        out = args.out or RESULTS / "refusal_compare.json"
        write_json(out, comparison)
        table = markdown_table(comparison)
        checks = "\n".join(
            f"- δ = 0 round trip, {name}: max |Δlogit| = {c['max_abs_logit_difference']:.2e} "
            f"(logits up to {c['logit_scale']:.1f})"
            for name, c in comparison["delta_zero_check"].items()
        )
        d = comparison["direction"]
        header = (
            f"Model `{comparison['model']}`; direction at layer {d['layer']}, position {d['position']} "
            f"(selected among layers {args.selection_layers}); prompts {comparison['prompts']}; "
            f"{comparison['seconds']:.0f} s on {machine}. From `analyses/refusal_compare.py --part main`."
        )
        write_markdown(out.with_suffix(".md"), "Refusal bypass comparison", f"{header}\n\n{table}\n\n{checks}")
        print(table)
        print(checks)
    else:
        rows = []
        for layer in ints(args.sweep_layers):
            comparison = compare_bypass(
                model,
                prompts,
                methods=("actadd", "nonlinear"),
                selection_layers=[layer],
                steps=args.sweep_steps,
                latent_size=args.latent_size,
                magnitude_weight=args.magnitude_weight,
                generate=False,
                n_paragraphs=10,
                seed=args.seed,
            )
            rows.append({"layer": layer, "position": comparison["direction"]["position"]} | comparison)
        result = {
            "analysis": "layer sweep: ActAdd vs the i-ResNet map, refusal log-odds and ||Δh||",
            "model": model.cfg.model_name,
            "rows": rows,
            "seconds": time.perf_counter() - start,
            "machine": machine,
        }
        out = args.out or RESULTS / "refusal_layer_sweep.json"
        write_json(out, result)
        table = sweep_table(rows)
        write_markdown(
            out.with_suffix(".md"),
            "Refusal bypass layer sweep",
            f"Model `{result['model']}`; {result['seconds']:.0f} s on {machine}. From "
            f"`analyses/refusal_compare.py --part sweep`.\n\n{table}",
        )
        print(table)
    print(f"wrote {out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
