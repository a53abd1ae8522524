"""``flowsteer train-saes``: train a bank of SAEs at many sites from one activation pass, then evaluate it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flowsteer.cli.common import add_model_arguments, load_model_from

KIND_NAMES = ("res", "mlp", "att", "pre", "mid")


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``"6-18"``, ``"3,5,9"``, ``"0-3,12"`` or ``"all"`` -> sorted layer indices."""
    if text.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"--layers {text!r}: write ranges and lists such as 6-18, 3,5,9 or all")
        layers.update(range(int(first), int(last) + 1) if sep else [int(first)])
    if bad := [layer for layer in layers if layer >= n_layers]:
        raise ValueError(f"--layers {text!r}: layers {sorted(bad)} do not exist; the model has 0..{n_layers - 1}")
    return sorted(layers)


def parse_count(text: str) -> int:
    """``"300k"``, ``"2M"``, ``"5000"`` -> an integer."""
    text = text.strip().lower().replace("_", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if factor > 1 else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise ValueError(f"cannot read the count {text!r}; write e.g. 300k, 2M or 5000") from None


def parse_sites(text: str, n_layers: int) -> list:
    """``"0-29/res 6-18/mlp,att"``: space-separated ``LAYERS/KINDS`` groups -> sorted unique sites."""
    from flowsteer.sites import Site

    sites = set()
    for group in text.split():
        layers, sep, kinds = group.partition("/")
        if not sep or not kinds:
            raise ValueError(f"--sites {group!r}: write LAYERS/KINDS groups such as 0-29/res or 6-18/mlp,att")
        for layer in parse_layers(layers, n_layers):
            sites.update(Site.parse(f"{layer}/{kind.strip()}") for kind in kinds.split(","))
    return sorted(sites)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train-saes", help="train SAEs at many sites from one activation pass")
    add_model_arguments(parser)
    parser.add_argument("--layers", default="all", help="layers, e.g. 6-18, 3,5,9 or all (default: all)")
    parser.add_argument("--kinds", default="res", help=f"comma-separated site kinds from {', '.join(KIND_NAMES)}")
    parser.add_argument("--sites", default=None,
                        help='instead of --layers/--kinds: groups such as "0-29/res 6-18/mlp,att"')
    parser.add_argument("--width", type=int, default=2304, help="latents per SAE (d_sae)")
    parser.add_argument("--k", type=int, default=32, help="active latents per token (TopK; JumpReLU target L0)")
    parser.add_argument("--architecture", default="topk", choices=["topk", "jumprelu", "standard"],
                        help="SAE architecture (default topk)")
    parser.add_argument("--tokens", default="300k", help="tokens harvested per site, e.g. 300k or 2M")
    parser.add_argument("--passes", type=int, default=None,
                        help="SAE passes over each round of harvested activations (default: the config's)")
    parser.add_argument("--batch", type=int, default=1024, help="activations per optimizer step")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the config's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SAEs' initialisation (default 0)")
    parser.add_argument("--out", required=True, help="folder for the bank (SAELens format + bank.json)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.checkpoint")
    parser.add_argument("--no-eval", action="store_true", help="skip the metrics report")
    parser.add_argument("--eval-tokens", default="32k", help="held-out activations for reconstruction metrics")
    parser.add_argument("--ce-tokens", default="4k", help="held-out tokens for cross-entropy metrics")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from flowsteer.paths import write_json
    from flowsteer.saes import SAETrainingConfig, evaluate_bank, metrics_markdown, train_saes
    from flowsteer.sites import Site

    model = load_model_from(args)
    if args.sites:
        sites = parse_sites(args.sites, model.cfg.n_layers)
    else:
        kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
        sites = [Site.parse(f"{layer}/{kind}") for layer in parse_layers(args.layers, model.cfg.n_layers)
                 for kind in kinds]
    options = dict(architecture=args.architecture, d_sae=args.width, k=args.k, tokens=parse_count(args.tokens),
                   batch_size=args.batch, seed=args.seed)
    for name in ("lr", "passes"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    config = SAETrainingConfig(**options)
    print(f"training {len(sites)} SAEs ({config.architecture}, width {config.d_sae}) on {config.tokens:,} tokens"
          f" x {config.passes} passes")
    start = time.perf_counter()
    bank = train_saes(model, sites, config, out=args.out, resume=args.resume, progress=not args.quiet)
    print(f"trained in {time.perf_counter() - start:.0f} s; bank: {args.out}")
    if not args.no_eval:
        results = evaluate_bank(model, bank, eval_tokens=parse_count(args.eval_tokens),
                                ce_tokens=parse_count(args.ce_tokens), progress=not args.quiet)
        out = Path(args.out)
        write_json(out / "metrics.json", results)
        (out / "metrics.md").write_text(metrics_markdown(results))
        print(metrics_markdown(results))
    return 0
