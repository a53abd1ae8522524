"""Whole-model feature-flow statistics (Feature Flow §3.3): every feature of every residual SAE matched
to its previous residual, MLP and attention SAE; per-layer distributions of s^R, s^M, s^A and class
shares under each threshold rule (chance level, fixed 0.5/0.15, per-layer median).

Data-free: needs only the bank. Writes ``OUT/flow_stats.json``, ``OUT/flow_scores.safetensors`` and
the figures ``OUT/flow_scores.png`` and ``OUT/flow_classes.png``.

    python analyses/flow_stats.py --saes DIR [--out results]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flowsteer.flow import plots, stats
from flowsteer.saes import SAEBank


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True, help="bank folder (SAELens folders per site)")
    parser.add_argument("--out", default="results", help="output folder (default results)")
    parser.add_argument("--weights", default="decoder", choices=["decoder", "encoder", "both"])
    parser.add_argument("--device", default="cpu", help="device for the SAEs")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out)
    start = time.perf_counter()
    saes = SAEBank.load(args.saes, device=args.device)
    result = stats.flow_statistics(saes, weights=args.weights)
    paths = stats.save(result, out)
    plots.plot_scores(result, out / "flow_scores.png")
    plots.plot_class_shares(result, out / "flow_classes.png")
    summary = stats.summary(result)
    print("| site | mean s^R | mean s^M | mean s^A | chance (R/M/A) | classes under the chance rule (T/P/N/U) |")
    print("|---|---|---|---|---|---|")
    for layer in summary["layers"]:
        means = [f"{layer['scores'][k]['mean']:.3f}" if k in layer["scores"] else "-" for k in ("res", "mlp", "att")]
        chance = "/".join(
            f"{layer['chance_level'][k]:.2f}" for k in ("res", "mlp", "att") if k in layer["chance_level"]
        )
        shares = "/".join(f"{v:.2f}" for v in layer["class_shares"]["chance"].values())
        print(f"| {layer['site']} | {' | '.join(means)} | {chance} | {shares} |")
    print(f"wrote {paths['summary']} and figures in {out} ({time.perf_counter() - start:.1f} s)")
    return summary


if __name__ == "__main__":
    main()
