"""``flowsteer steer``: generate with SAE features amplified, removed or clamped, alone or along a flow graph.

    flowsteer steer --feature 12/res/4111 --strength 8 --prompt "Tell me about your weekend."
    flowsteer steer --graph graph.json --layer 20 --strategy cumulative --schedule exponential --strength 2 \\
        --prompt "I think" --raw --sample --compare

Decoding as in ``flowsteer generate``: the chat template unless --raw, greedy unless --sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowsteer.cli.common import (
    add_generation_arguments,
    add_model_arguments,
    generation_options,
    load_model_from,
    prompt_from,
)
from flowsteer.paths import cache_dir

DEFAULT_BANK = cache_dir("saes") / "smollm2-135m-instruct-flow"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("steer", help="steer generation by SAE features or along a flow graph")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature", action="append", help="feature to steer, e.g. 12/res/4111 (repeatable)")
    target.add_argument("--graph", help="flow graph file (.json or .graphml from `flowsteer flow`)")
    parser.add_argument("--prompt", required=True, help="the user message (or raw text to continue with --raw)")
    parser.add_argument(
        "--strength",
        type=float,
        action="append",
        help="s (add, in feature units), r (rescale) or "
        "c (clamp, in units); one for all or one per --feature (default 8, rescale 0)",
    )
    parser.add_argument("--mode", choices=["add", "rescale", "clamp"], default="add",
                        help="add s units, rescale by r, or clamp to c units (default add)")
    parser.add_argument("--layer", type=int, default=None, help="graph layer to steer at/up to (default: span end)")
    parser.add_argument("--strategy", choices=["single", "cumulative"], default="cumulative",
                        help="graph: steer the features of --layer only, or of every layer up to it (default)")
    parser.add_argument("--schedule", choices=["constant", "linear", "exponential"], default="constant",
                        help="graph: how the strength changes over layers (default constant)")
    parser.add_argument("--alpha", type=float, default=-0.05, help="exponential schedule: s e^(alpha l)")
    parser.add_argument("--end", type=float, default=1.0, help="linear schedule: strength s* at the span's end")
    parser.add_argument("--saes", default=str(DEFAULT_BANK), help=f"SAE bank folder (default {DEFAULT_BANK})")
    parser.add_argument("--compare", action="store_true", help="also print the unsteered generation")
    parser.add_argument("-n", type=int, default=1, help="generations per prompt (with --sample; default 1)")
    add_generation_arguments(parser)
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def build_steerer(args: argparse.Namespace, model, bank):
    """The `FeatureSteerer` the arguments describe (units measured for TopK SAEs, cached)."""
    from flowsteer.flow.folding import is_jumprelu
    from flowsteer.flow.graph import FlowGraph
    from flowsteer.sites import FeatureId
    from flowsteer.steering import SCHEDULES, FeatureSteerer, graph_features, graph_steerer, typical_activations

    default = 0.0 if args.mode == "rescale" else 8.0
    strengths = args.strength or [default]
    if args.graph:
        graph = FlowGraph.load(args.graph)
        layer = graph.span[1] if args.layer is None else args.layer
        sites = {f.site for f, _ in graph_features(graph, layer, args.strategy)}
    else:
        features = [FeatureId.parse(f) for f in args.feature]
        sites = {f.site for f in features}
    missing = sorted(str(s) for s in sites if s not in bank)
    if missing:
        raise ValueError(f"the bank at {args.saes} has no SAE at {', '.join(missing)}; pass --saes with one that has")
    units = None
    if args.mode != "rescale" and not all(is_jumprelu(bank[s]) for s in sites):
        units = typical_activations(model, {s: bank[s] for s in sorted(sites)})
    if args.graph:
        if len(strengths) != 1:
            raise ValueError("with --graph give one --strength (the schedule spreads it over layers)")
        options = {"linear": {"end": args.end}, "exponential": {"alpha": args.alpha}}.get(args.schedule, {})
        schedule = SCHEDULES[args.schedule](**options)
        return graph_steerer(
            graph, bank, layer, strengths[0], strategy=args.strategy, schedule=schedule, mode=args.mode, units=units
        )
    if len(strengths) not in (1, len(features)):
        raise ValueError(f"{len(strengths)} --strength values for {len(features)} features; give one or one each")
    return FeatureSteerer(bank, features, args.mode, strengths if len(strengths) > 1 else strengths[0], units=units)


def run(args: argparse.Namespace) -> int:
    from flowsteer.patching import generate_with_patches
    from flowsteer.saes import SAEBank

    if not Path(args.saes).is_dir():
        raise FileNotFoundError(
            f"no SAE bank at {args.saes}; train one (flowsteer train-saes --out {args.saes}) or pass --saes"
        )
    model = load_model_from(args)
    bank = SAEBank.load(args.saes, model)
    steerer = build_steerer(args, model, bank)
    prompts = [prompt_from(model, args)] * args.n
    options = generation_options(args)
    shown = args.prompt if args.raw else ""  # a raw prompt is continued: print it before each continuation
    print(f"# {steerer!r}")
    if args.compare:
        print("--- unsteered ---")
        for text in generate_with_patches(model, prompts, **options):
            print(shown + text)
        print("--- steered ---")
    for text in steerer.generate(model, prompts, **options):
        print(shown + text)
    return 0
