"""``flowsteer organism build|info``: build the refusal model organism, or show its manifest."""

from __future__ import annotations

import argparse
import json

from flowsteer.models.organisms import REFUSAL_ORGANISM, organism_dir, read_manifest


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("organism", help=f"build or inspect the refusal model organism {REFUSAL_ORGANISM}")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="fine-tune SmolLM2-135M-Instruct to refuse and cache it (minutes on CPU)")
    build.add_argument("--device", default="cpu", help="where to train (default: cpu)")
    actions.add_parser("info", help="print the cached organism's hyper-parameters, data and timing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        manifest = read_manifest(organism_dir())
        manifest["training"] = {key: value for key, value in manifest["training"].items() if key != "losses"}
        print(json.dumps(manifest, indent=2))
        return 0
    from flowsteer.organism import build_refusal_organism

    manifest = build_refusal_organism(device=args.device)
    print(json.dumps({"path": str(organism_dir()), "timing_seconds": manifest["timing_seconds"]}, indent=2))
    print("measure it with: python analyses/refusal_organism.py evaluate")
    return 0
