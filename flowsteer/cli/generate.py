"""``flowsteer generate "prompt"``: chat-formatted generation, optionally steered by vectors."""

from __future__ import annotations

import argparse

from flowsteer.cli.common import add_model_arguments, load_model_from
from flowsteer.models import chat_prompt
from flowsteer.patching import AddVector, Patch, generate_with_patches
from flowsteer.sites import Site
from flowsteer.steering.vector_files import load_vector


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("generate", help="generate text, optionally with steering vectors")
    parser.add_argument("prompt", help="the user message (or raw text with --raw)")
    add_model_arguments(parser)
    parser.add_argument("--raw", action="store_true", help="do not wrap the prompt in the chat template")
    parser.add_argument("--system", default=None, help="system message for the chat template")
    parser.add_argument(
        "--steer",
        action="append",
        default=[],
        metavar="SITE:FILE:SCALE",
        help="add SCALE x the vector in FILE (.safetensors or .npy) at SITE, e.g. 12/res:v.safetensors:4",
    )
    parser.add_argument("--positions", default="all", choices=["all", "prompt", "generated"])
    parser.add_argument("--compare", action="store_true", help="also print the unsteered generation")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
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
    prompt = args.prompt if args.raw else chat_prompt(model, args.prompt, system=args.system)
    patches = [parse_steer(spec, model.cfg.d_model) for spec in args.steer]
    patches = [Patch(p.site, p.intervention, args.positions) for p in patches]
    options = dict(
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed,
    )
    if args.compare and patches:
        print("--- unsteered ---")
        print(generate_with_patches(model, prompt, **options).texts[0])
        print("--- steered ---")
    print(generate_with_patches(model, prompt, patches, **options).texts[0])
    return 0
