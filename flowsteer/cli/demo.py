"""``flowsteer demo``: the main job on the embedded model (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
import time

from flowsteer.cli.common import add_model_arguments, load_model_from


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="run the demo and write OUT/report.md")
    add_model_arguments(parser)
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flowsteer.demo import SECTIONS, run_demo

    start = time.perf_counter()
    print(f"loading {args.model} ...", flush=True)
    model = load_model_from(args)
    print(f"   loaded in {time.perf_counter() - start:.1f} s", flush=True)
    report = run_demo(args.out, model, SECTIONS, progress=not args.quiet)
    print(f"\nreport: {report} ({time.perf_counter() - start:.0f} s in all)")
    return 0
