"""``flowsteer flow``: a feature's flow graph, or whole-model flow statistics, from a bank of SAEs.

    flowsteer flow 18/res/123 --saes DIR --out flow.png [--out flow.html ...]
    flowsteer flow --stats --saes DIR --out DIR

The output format follows the suffix (.png/.svg/.pdf figure, .html interactive view, .json
node-link data, .graphml); ``--format circuit-tracer`` writes .json outputs as circuit-tracer graph
files instead (``--scan`` names the model in their metadata). Labels come from ``--labels DIR``
(computed earlier), or are computed from ``--corpus FILE`` (one text per line, or .jsonl) with the
model and cached in that folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowsteer.cli.common import add_model_arguments, load_model_from
from flowsteer.flow.classes import PAPER_THRESHOLDS


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("flow", help="feature-flow graphs and statistics from a bank of SAEs")
    parser.add_argument("feature", nargs="?", help="seed residual feature, e.g. 18/res/123 (not with --stats)")
    parser.add_argument("--saes", required=True, help="folder of SAELens SAE folders, one per site")
    parser.add_argument(
        "--out",
        action="append",
        required=True,
        help="output file(s) by suffix: .png .svg .pdf .html .json .graphml; a folder with --stats",
    )
    parser.add_argument(
        "--format",
        choices=["node-link", "circuit-tracer"],
        default="node-link",
        help="what .json outputs hold: networkx node-link data (default) or a circuit-tracer graph file",
    )
    parser.add_argument("--scan", default=None, help="model name in circuit-tracer metadata (default: --model)")
    parser.add_argument("--stats", action="store_true", help="whole-model statistics instead of one graph")
    parser.add_argument("--res-threshold", type=float, default=PAPER_THRESHOLDS.res,
                        help=f"cut the residual chain below this (default {PAPER_THRESHOLDS.res})")
    parser.add_argument("--module-threshold", type=float, default=PAPER_THRESHOLDS.module,
                        help=f"keep module nodes from this similarity (default {PAPER_THRESHOLDS.module})")
    parser.add_argument("--k", type=int, default=1, help="matches followed per node (1)")
    parser.add_argument(
        "--rule",
        choices=["chance", "quantile", "fixed"],
        default="chance",
        help="per-layer threshold rule for the classes (default chance)",
    )
    parser.add_argument("--weights", choices=["decoder", "encoder", "both"], default="decoder",
                        help="SAE weights whose cosine matches features (default decoder)")
    parser.add_argument("--no-backward", action="store_true", help="only follow the feature forward")
    parser.add_argument("--no-forward", action="store_true", help="only follow the feature backward")
    parser.add_argument("--labels", default=None, help="folder of feature labels (read, or written with --corpus)")
    parser.add_argument(
        "--corpus",
        default=None,
        help="texts to compute labels from: .txt (one per line), .jsonl, or data:eval (the built-in corpus)",
    )
    parser.add_argument("--sae-device", default="cpu", help="device for the SAEs (default cpu)")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def _rule(name: str):
    from flowsteer.flow.classes import ChanceThresholds, FixedThresholds, QuantileThresholds

    return {"chance": ChanceThresholds, "quantile": QuantileThresholds, "fixed": FixedThresholds}[name]()


def _labels(args: argparse.Namespace, saes):
    from flowsteer.flow.labels import FeatureLabels, load_or_compute
    from flowsteer.flow.tokens import read_texts, texts_key

    if args.corpus is None:
        return FeatureLabels.load(args.labels) if args.labels else None
    folder = Path(args.labels) if args.labels else Path(args.saes) / "labels"
    texts = read_texts(args.corpus)
    return load_or_compute(folder, load_model_from(args), saes, texts, key=texts_key(texts), progress=not args.quiet)


def run(args: argparse.Namespace) -> int:
    from flowsteer.saes import SAEBank

    if args.stats == bool(args.feature):
        raise ValueError("give either a seed feature (e.g. 18/res/123) or --stats")
    saes = SAEBank.load(args.saes, device=args.sae_device)
    if args.stats:
        return _stats(args, saes)
    from flowsteer.flow.build import build_flow_graph
    from flowsteer.flow.classes import FixedThresholds

    flow = build_flow_graph(
        saes,
        args.feature,
        thresholds=FixedThresholds(res=args.res_threshold, module=args.module_threshold),
        k=args.k,
        backward=not args.no_backward,
        forward=not args.no_forward,
        rule=_rule(args.rule),
        labels=_labels(args, saes),
        weights=args.weights,
    )
    print(flow)
    for out in args.out:
        if args.format == "circuit-tracer" and Path(out).suffix.lower() == ".json":
            path = flow.save(out, format="circuit-tracer", scan=args.scan or args.model)
        else:
            path = flow.save(out)
        print(f"wrote {path}")
    return 0


def _stats(args: argparse.Namespace, saes) -> int:
    from flowsteer.flow import plots, stats

    if len(args.out) != 1:
        raise ValueError("--stats writes into one folder: give a single --out DIR")
    folder = Path(args.out[0])
    result = stats.flow_statistics(saes, weights=args.weights, progress=not args.quiet)
    paths = stats.save(result, folder)
    paths["scores_figure"] = plots.plot_scores(result, folder / "flow_scores.png")
    paths["classes_figure"] = plots.plot_class_shares(result, folder / "flow_classes.png")
    for name, path in paths.items():
        print(f"{name:15s} {path}")
    return 0
