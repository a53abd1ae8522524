"""``flowsteer refusal``: bypass a model's refusals with one method, or compare linear and invertible-map
methods on held-out prompts.

    flowsteer refusal --method nonlinear --layer 12     # the i-ResNet interchange map at layer 12 vs baseline
    flowsteer refusal --compare --layer 12              # ActAdd, ablation, DAS, i-ResNet, INNSteer: one table
"""

from __future__ import annotations

import argparse

import torch

from flowsteer.cli.common import DTYPES
from flowsteer.models import REFUSAL_ORGANISM

METHOD_NAMES = {
    "actadd": "actadd",
    "ablation": "directional_ablation",
    "das": "das",
    "nonlinear": "nonlinear",
    "nonlinear-shift": "nonlinear_shift",
    "innsteer": "innsteer",
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "refusal", help="bypass refusals: linear (ActAdd, ablation, DAS) vs invertible-map interventions",
        description="Fit refusal-bypass methods on training prompts, choose each one's setting on validation prompts "
                    "by attack success (judged against an unpatched reference model) and report it once on held-out "
                    "test prompts beside the unpatched baseline, with 95%% intervals.",
    )
    parser.add_argument("--model", default=REFUSAL_ORGANISM, help=f"model name or folder (default: {REFUSAL_ORGANISM})")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight dtype")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", choices=sorted(METHOD_NAMES), help="fit and evaluate one method")
    which.add_argument("--compare", action="store_true", help="fit and evaluate every method, print one table")
    parser.add_argument("--reference", default=None, help="the unpatched model replies are judged against (default: "
                        f"the organism's base model for {REFUSAL_ORGANISM}, else --model itself)")
    parser.add_argument("--layer", type=int, default=None, help="layer of the intervention (default: n_layers // 2)")
    parser.add_argument("--n-train", type=int, default=96, help="training prompts per label")
    parser.add_argument(
        "--n-val", type=int, default=32, help="validation prompts per label (selection, early stopping)"
    )
    parser.add_argument("--n-test", type=int, default=40, help="held-out test prompts per label")
    parser.add_argument("--steps", type=int, default=120, help="training steps of the interchange-trained maps")
    parser.add_argument("--latent-size", type=int, default=1, help="latent coordinates replaced (DAS, i-ResNet)")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="reply length judged")
    parser.add_argument("--paragraphs", type=int, default=10, help="plain paragraphs for the cross-entropy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fits (default 0)")
    parser.add_argument("--out", default=None, metavar="JSON", help="write every number here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flowsteer.evals.judge import default_calibration
    from flowsteer.models import DEFAULT_MODEL, load_model
    from flowsteer.paths import write_json
    from flowsteer.refusal.bypass import (
        BypassJudge,
        BypassSettings,
        bypass_prompts,
        compare_bypass,
        linear_direction,
        markdown_table,
    )
    from flowsteer.refusal.prompts import calibration_instructions

    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])
    layer = model.cfg.n_layers // 2 if args.layer is None else args.layer
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"--layer {layer} is outside the model's layers 0..{model.cfg.n_layers - 1}")
    reference_name = args.reference or (DEFAULT_MODEL if args.model == REFUSAL_ORGANISM else args.model)
    reference = model if reference_name == args.model else load_model(reference_name, device=args.device)
    prompts = bypass_prompts(model, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
    methods = list(dict.fromkeys(METHOD_NAMES.values())) if args.compare else [METHOD_NAMES[args.method]]
    direction = linear_direction(model, prompts, [layer])
    print(f"direction: layer {direction.layer}, position {direction.position} ({direction.selection['rule']})")
    result = compare_bypass(
        model, prompts, direction, BypassJudge(reference, default_calibration(reference, calibration_instructions())),
        methods=methods,
        settings=BypassSettings(steps=args.steps, latent_size=args.latent_size),
        max_new_tokens=args.max_new_tokens, n_paragraphs=args.paragraphs, seed=args.seed, progress=not args.quiet,
    )
    print(markdown_table(result))
    for name, check in result["delta_zero_check"].items():
        print(f"δ = 0 round trip, {name}: max |Δlogit| = {check['max_abs_logit_difference']:.2e}")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0
