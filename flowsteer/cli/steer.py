"""``flowsteer steer``: generate with SAE features amplified, removed or clamped, alone or along a flow graph.

    flowsteer steer --feature 12/res/4111 --strength 8 --prompt "I think"
    flowsteer steer --graph graph.json --layer 20 --strategy cumulative --schedule exponential --strength 2 \\
        --prompt "I think" --compare
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowsteer.cli.common import add_model_arguments, load_model_from
from flowsteer.paths import cache_dir

DEFAULT_BANK = cache_dir("saes") / "smollm2-135m-instruct-flow"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("steer", help="steer generation by SAE features or along a flow graph")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--feature", action="append", help="feature to steer, e.g. 12/res/4111 (repeatable)")
    target.add_argument("--graph", help="flow graph file (.json or .graphml from `flowsteer flow`)")
    parser.add_argument("--prompt", required=True, help="text to continue (raw; --chat wraps it in the chat template)")
    parser.add_argument(
        "--strength",
        type=float,
        action="append",
        help="s (add, in feature units), r (rescale) or "
        "c (clamp, in units); one for all or one per --feature (default 8, rescale 0)",
    )
    parser.add_argument("--mode", choices=["add", "rescale", "clamp"], default="add")
    parser.add_argument("--layer", type=int, default=None, help="graph layer to steer at/up to (default: span end)")
    parser.add_argument("--strategy", choices=["single", "cumulative"], default="cumulative")
    parser.add_argument("--schedule", choices=["constant", "linear", "exponential"], default="constant")
    parser.add_argument("--alpha", type=float, default=-0.05, help="exponential schedule: s e^(alpha l)")
    parser.add_argument("--end", type=float, default=1.0, help="linear schedule: strength s* at the span's end")
    parser.add_argument("--saes", default=str(DEFAULT_BANK), help=f"SAE bank folder (default {DEFAULT_BANK})")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    parser.add_argument("--compare", action="store_true", help="also print the unsteered generation")
    parser.add_argument("-n", type=int, default=1, help="samples to generate (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
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
    from flowsteer.models import chat_prompt
    from flowsteer.patching import generate_with_patches
    from flowsteer.saes import SAEBank

    if not Path(args.saes).is_dir():
        raise FileNotFoundError(f"no SAE bank at {args.saes}; train one (analyses/build_flow_bank.py) or pass --saes")
    model = load_model_from(args)
    bank = SAEBank.load(args.saes, model)
    steerer = build_steerer(args, model, bank)
    prompt = chat_prompt(model, args.prompt) if args.chat else args.prompt
    options = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    prompts = [prompt] * args.n
    print(f"# {steerer!r}")
    if args.compare:
        print("--- unsteered ---")
        for text in generate_with_patches(model, prompts, **options):
            print(args.prompt + text)
        print("--- steered ---")
    for text in steerer.generate(model, prompts, **options):
        print(args.prompt + text)
    return 0
