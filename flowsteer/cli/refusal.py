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
        "refusal", help="bypass refusals: linear (ActAdd, ablation, DAS) vs invertible-map interventions"
    )
    parser.add_argument("--model", default=REFUSAL_ORGANISM, help=f"model name or folder (default: {REFUSAL_ORGANISM})")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight dtype")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", choices=sorted(METHOD_NAMES), help="fit and evaluate one method")
    which.add_argument("--compare", action="store_true", help="fit and evaluate every method, print one table")
    parser.add_argument("--layer", type=int, default=None, help="layer of the intervention (default: n_layers // 2)")
    parser.add_argument("--n-train", type=int, default=96, help="training prompts per label")
    parser.add_argument(
        "--n-val", type=int, default=32, help="validation prompts per label (selection, early stopping)"
    )
    parser.add_argument("--n-test", type=int, default=40, help="held-out test prompts per label")
    parser.add_argument("--steps", type=int, default=120, help="training steps of the interchange-trained maps")
    parser.add_argument("--latent-size", type=int, default=1, help="latent coordinates replaced (DAS, i-ResNet)")
    parser.add_argument("--magnitude-weight", type=float, default=1.0, help="weight of ||Δh||²/||h||² in training")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="reply length judged")
    parser.add_argument("--paragraphs", type=int, default=20, help="plain paragraphs for the cross-entropy")
    parser.add_argument("--no-generate", action="store_true", help="judge by refusal log-odds only (faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, metavar="JSON", help="write every number here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flowsteer.models import load_model
    from flowsteer.paths import write_json
    from flowsteer.refusal.bypass import bypass_prompts, compare_bypass, markdown_table

    torch.manual_seed(args.seed)
    model = load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])
    layer = model.cfg.n_layers // 2 if args.layer is None else args.layer
    if not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"--layer {layer} is outside the model's layers 0..{model.cfg.n_layers - 1}")
    prompts = bypass_prompts(model, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
    methods = list(dict.fromkeys(METHOD_NAMES.values())) if args.compare else [METHOD_NAMES[args.method]]
    comparison = compare_bypass(
        model,
        prompts,
        methods=methods,
        selection_layers=[layer],
        steps=args.steps,
        latent_size=args.latent_size,
        magnitude_weight=args.magnitude_weight,
        max_new_tokens=args.max_new_tokens,
        n_paragraphs=args.paragraphs,
        generate=not args.no_generate,
        seed=args.seed,
    )
    print(markdown_table(comparison))
    for name, check in comparison["delta_zero_check"].items():
        print(f"δ = 0 round trip, {name}: max |Δlogit| = {check['max_abs_logit_difference']:.2e}")
    if args.out:
        write_json(args.out, comparison)
        print(f"wrote {args.out}")
    return 0
