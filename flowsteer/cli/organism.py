"""``flowsteer organism build|install|info|export-adapter``: the refusal model organism."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.refusal.organism.cache import organism_dir, read_manifest


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "organism", help=f"make, inspect or export the refusal model organism {REFUSAL_ORGANISM}",
        description=f"The refusal model organism {REFUSAL_ORGANISM}: SmolLM2-135M-Instruct with a low-rank adapter "
                    "that makes it refuse harmful requests. load_model installs it on first use.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION", help="what to do")
    build = actions.add_parser(
        "build", help="train the organism from scratch and cache it (minutes on CPU)",
        description="Fine-tune the adapter from scratch by the current recipe and cache the organism, replacing "
                    "any cached one.",
    )
    build.add_argument("--device", default="cpu", help="where to train (default: cpu)")
    install = actions.add_parser(
        "install", help="apply the adapter shipped with flowsteer and cache the organism (seconds)",
        description="Add the shipped low-rank adapter to the base model's weights and cache the result.",
    )
    install.add_argument("--device", default="cpu", help="where to apply it (default: cpu)")
    actions.add_parser("info", help="print the cached organism's recipe, data, precision and timing",
                       description="Print the cached organism's manifest (training losses left out).")
    export = actions.add_parser(
        "export-adapter", help="copy the cached build's adapter into the source tree (maintainers)",
        description="Copy the adapter and manifest of an organism trained here (flowsteer organism build) to "
                    "data/organisms/ of this source checkout, so that it ships with the next release.",
    )
    export.add_argument("--to", type=Path, default=None, help="target folder (default: the shipped adapter's)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        manifest = read_manifest(organism_dir())
        manifest["training"] = {key: value for key, value in manifest["training"].items() if key != "losses"}
        print(json.dumps(manifest, indent=2))
        return 0
    if args.action == "export-adapter":
        from flowsteer.refusal.organism.adapter import export_adapter

        print(f"wrote {export_adapter(args.to)}")
        return 0
    if args.action == "install":
        from flowsteer.refusal.organism.adapter import install_shipped_adapter

        manifest = install_shipped_adapter(args.device)
        print(json.dumps({"path": str(organism_dir()), "install_seconds": manifest["install_seconds"]}, indent=2))
        return 0
    from flowsteer.refusal.organism import build_refusal_organism

    manifest = build_refusal_organism(device=args.device, progress=not args.quiet)
    print(json.dumps({"path": str(organism_dir()), "timing_seconds": manifest["timing_seconds"]}, indent=2))
    return 0
