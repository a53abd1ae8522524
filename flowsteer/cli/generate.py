"""``flowsteer generate "prompt"``: generation (chat template unless --raw, greedy unless --sample), optionally
steered by vectors."""

from __future__ import annotations

import argparse

from flowsteer.cli.common import (
    add_generation_arguments,
    add_model_arguments,
    generation_options,
    load_model_from,
    prompt_from,
)
from flowsteer.patching import AddVector, Patch, generate_with_patches
from flowsteer.sites import Site
from flowsteer.steering.vector_files import load_vector


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("generate", help="generate text, optionally with steering vectors")
    parser.add_argument("prompt", help="the user message (or raw text with --raw)")
    add_model_arguments(parser)
    add_generation_arguments(parser)
    parser.add_argument(
        "--steer",
        action="append",
        default=[],
        metavar="SITE:FILE:SCALE",
        help="add SCALE x the vector in FILE (.safetensors or .npy) at SITE, e.g. 12/res:v.safetensors:4",
    )
    parser.add_argument("--positions", default="all", choices=["all", "prompt", "generated"],
                        help="which tokens the vectors are added at (default all)")
    parser.add_argument("--compare", action="store_true", help="also print the unsteered generation")
    parser.set_defaults(run=run)


def parse_steer(spec: str, d_model: int) -> Patch:
    """``SITE:FILE:SCALE`` -> an `AddVector` patch (SCALE optional, default 1)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--steer {spec!r}: write SITE:FILE:SCALE, e.g. 12/res:vector.safetensors:4")
    scale = float(parts[2]) if len(parts) == 3 else 1.0
    return Patch(Site.parse(parts[0]), AddVector(load_vector(parts[1], d_model), scale))


def run(args: argparse.Namespace) -> int:
    model = load_model_from(args)
    prompt = prompt_from(model, args)
    patches = [parse_steer(spec, model.cfg.d_model) for spec in args.steer]
    patches = [Patch(p.site, p.intervention, args.positions) for p in patches]
    options = generation_options(args)
    if args.compare and patches:
        print("--- unsteered ---")
        print(generate_with_patches(model, prompt, **options).texts[0])
        print("--- steered ---")
    print(generate_with_patches(model, prompt, patches, **options).texts[0])
    return 0
