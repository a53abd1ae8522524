"""A gallery of flow graphs (Feature Flow §3.3, Fig. 2): for chosen seeds, or automatically the best
candidates of `flowsteer.flow.pick_seed` (long top-1 residual chains with module matches above
chance, active in the label corpus, readable promoted tokens), the flow graph as PNG, interactive
HTML and node-link JSON, labelled with top promoted tokens and top activating contexts.

Labels come from one pass over ``--corpus`` (texts; ``data:eval`` is the built-in corpus's eval
split) or, by default, the first ``--corpus-rows`` rows of 128 tokens of that split; promoted
tokens are computed for the graphs' nodes only.

Writes ``OUT/gallery/<seed>.{png,html,json}``, ``OUT/gallery/index.html`` and ``OUT/flow_gallery.json``.

    python analyses/flow_gallery.py --saes DIR [--seeds 18/res/123 ...] [--n 4] [--corpus-rows 96]
"""

from __future__ import annotations

import argparse
import html
import time
from pathlib import Path

import torch

from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.classes import PAPER_THRESHOLDS, FixedThresholds
from flowsteer.flow.labels import FeatureLabels
from flowsteer.flow.seeds import default_corpus, pick_seed
from flowsteer.flow.tokens import read_texts
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.paths import atomic_file, write_json
from flowsteer.saes import SAEBank
from flowsteer.sites import FeatureId


def write_index(folder: Path, entries: list[dict]) -> Path:
    items = "\n".join(
        f"<h3>{html.escape(e['seed'])}: span {e['span'][0]}-{e['span'][1]}, {e['nodes']} nodes</h3>"
        f'<p><a href="{e["files"]["html"]}">interactive view</a> | <a href="{e["files"]["json"]}">JSON</a></p>'
        f'<img src="{e["files"]["png"]}" style="max-width:100%">'
        for e in entries
    )
    path = folder / "index.html"
    with atomic_file(path) as handle:
        handle.write(
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>flow gallery</title></head>'
            f"<body><h1>flow gallery</h1>{items}</body></html>\n"
        )
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True)
    parser.add_argument("--seeds", nargs="+", default=None, help="seed features, e.g. 18/res/123")
    parser.add_argument("--n", type=int, default=4, help="automatic seeds (when --seeds is not given)")
    parser.add_argument("--candidates", type=int, default=12, help="pick_seed candidates the automatic seeds come from")
    parser.add_argument("--corpus", default=None, help="texts to label features from (file, or data:eval)")
    parser.add_argument("--texts", type=int, default=200, help="texts of --corpus used for labels")
    parser.add_argument("--corpus-rows", type=int, default=96, help="built-in corpus rows when no --corpus is given")
    parser.add_argument("--no-labels", action="store_true", help="data-free: no model, no labels")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--res-threshold", type=float, default=PAPER_THRESHOLDS.res)
    parser.add_argument("--module-threshold", type=float, default=PAPER_THRESHOLDS.module)
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the PNG figures (small files)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start, out = time.perf_counter(), Path(args.out)
    saes = SAEBank.load(args.saes, device=args.device)
    model = corpus = None
    if not args.no_labels:
        model = load_model(args.model, device=args.device)
        corpus = read_texts(args.corpus)[: args.texts] if args.corpus else [default_corpus(model, args.corpus_rows)]
    thresholds = dict(thresholds=FixedThresholds(res=args.res_threshold, module=args.module_threshold))
    candidates, labels = [], None
    if args.seeds:
        seeds = [FeatureId.parse(s) for s in args.seeds]
        if model is not None:
            features: dict = {}
            for seed in seeds:
                flow = build_flow_graph(saes, seed, **thresholds)
                for node in flow.graph:
                    feature = flow.feature(node)
                    features.setdefault(feature.site, set()).add(feature.index)
            labels = FeatureLabels.compute(model, saes, corpus, features=features)
    else:
        choice = pick_seed(saes, model, corpus, candidates=max(args.candidates, args.n), **thresholds)
        candidates, labels = choice.candidates, choice.labels
        seeds = [FeatureId.parse(entry["seed"]) for entry in candidates[: args.n]]
    folder = out / "gallery"
    entries = []
    for seed in seeds:
        flow = build_flow_graph(saes, seed, labels=labels, **thresholds)
        stem = f"{seed.layer}-{seed.site.short}-{seed.index}"
        files = {suffix: f"{stem}.{suffix}" for suffix in ("png", "html", "json")}
        for suffix, name in files.items():
            flow.save(folder / name, **({"dpi": args.dpi} if suffix == "png" else {}))
        entry = {
            "seed": str(seed),
            "span": list(flow.span),
            "nodes": len(flow),
            "per_layer": {str(k): v for k, v in flow.nodes_per_layer().items()},
            "seed_class": flow.graph.nodes[str(seed)].get("class"),
            "files": files,
        }
        if labels is not None:
            entry["promoted_tokens"] = labels.promoted_tokens(seed)
            entry["contexts"] = [text for _, text in labels.contexts(seed, 3)]
        entries.append(entry)
        print(f"{seed}: span {flow.span}, {len(flow)} nodes; {entry.get('promoted_tokens', '')}")
    write_index(folder, entries)
    result = {
        "settings": vars(args),
        "graphs": entries,
        "candidates": candidates,
        "label_corpus_tokens": labels.meta["corpus_tokens"] if labels is not None else 0,
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "flow_gallery.json", result)
    print(f"wrote {folder / 'index.html'} and {out / 'flow_gallery.json'} ({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
