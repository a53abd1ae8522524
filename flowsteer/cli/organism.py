"""``flowsteer organism build|info``: build the refusal model organism, or show its manifest."""

from __future__ import annotations

import argparse
import json

from flowsteer.models.organisms import REFUSAL_ORGANISM, organism_dir, read_manifest


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("organism", help=f"build or inspect the refusal model organism {REFUSAL_ORGANISM}")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="fine-tune SmolLM2-135M-Instruct to refuse (~15 min on 2 CPU cores)")
    build.add_argument("--device", default="cpu", help="where to train and evaluate (default: cpu)")
    build.add_argument("--results", default=None, metavar="JSON", help="also write manifest + all replies here")
    actions.add_parser("info", help="print the cached organism's hyper-parameters and measured metrics")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        manifest = read_manifest(organism_dir())
        shown = {key: value for key, value in manifest.items() if key not in ("mistakes",)}
        shown["training"] = {key: value for key, value in manifest["training"].items() if key != "losses"}
        print(json.dumps(shown, indent=2))
        return 0
    from flowsteer.organism import build_refusal_organism
    from flowsteer.paths import write_json

    manifest = build_refusal_organism(device=args.device)
    if args.results:
        write_json(args.results, manifest)
    print(json.dumps({"metrics": manifest["metrics"], "targets": manifest["targets"],
                      "timing_seconds": manifest["timing_seconds"]}, indent=2))
    return 0
