"""A gallery of flow graphs (Feature Flow §3.3, Fig. 2): for chosen seeds, or automatically the
residual features at ``--seed-layer`` with the longest top-1 residual chains (s^R >= 0.5 at every
step, ties broken by s^R), the flow graph as PNG, interactive HTML and node-link JSON, labelled
with top promoted tokens and top activating contexts when a corpus (or computed labels) is given.

Writes ``OUT/gallery/<seed>.{png,html,json}``, ``OUT/gallery/index.html`` and ``OUT/flow_gallery.json``.

    python analyses/flow_gallery.py --saes DIR [--seeds 18/res/123 ...] [--n 6] [--corpus texts.txt]
"""

from __future__ import annotations

import argparse
import hashlib
import html
import time
from pathlib import Path

import torch

from flowsteer.flow.bank import residual_sites
from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.labels import FeatureLabels, load_or_compute
from flowsteer.flow.scores import model_scores
from flowsteer.flow.tokens import read_texts
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.paths import atomic_file, write_json
from flowsteer.saes import SAEBank
from flowsteer.sites import FeatureId, Site


def chain_lengths(saes, threshold: float = 0.5) -> tuple[dict[Site, torch.Tensor], dict]:
    """Length of every residual feature's top-1 backward chain with s^R >= ``threshold`` (and the scores)."""
    lengths: dict[Site, torch.Tensor] = {}
    scores = model_scores(saes)
    for site in residual_sites(saes).values():
        ones = torch.ones(saes[site].cfg.d_sae, dtype=torch.long)
        layer = scores.get(site)
        if layer is None or "res" not in layer.matches:
            lengths[site] = ones
            continue
        previous = lengths[layer.predecessors["res"]]
        keep = layer.score("res") >= threshold
        lengths[site] = ones + torch.where(keep, previous[layer.top1("res")], torch.zeros_like(ones))
    return lengths, scores


def auto_seeds(saes, n: int, layer: int | None) -> list[FeatureId]:
    lengths, scores = chain_lengths(saes)
    sites = [s for s in residual_sites(saes).values() if s.kind == "resid_post"]
    if layer is None:
        site = sites[min(len(sites) - 1, round(0.75 * (len(sites) - 1)))]
    else:
        site = Site(layer, "resid_post")
        if site not in lengths:
            raise ValueError(f"no residual SAE at layer {layer}")
    tie = (
        scores[site].score("res")
        if site in scores and "res" in scores[site].matches
        else torch.zeros(len(lengths[site]))
    )
    order = sorted(range(len(lengths[site])), key=lambda i: (-int(lengths[site][i]), -float(tie[i])))
    return [FeatureId(site, i) for i in order[:n]]


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
    parser.add_argument("--n", type=int, default=6, help="automatic seeds (when --seeds is not given)")
    parser.add_argument("--seed-layer", type=int, default=None, help="layer of the automatic seeds (default 3/4 depth)")
    parser.add_argument("--corpus", default=None, help="texts to label features from (cached under OUT/labels)")
    parser.add_argument("--labels", default=None, help="folder of computed labels")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--res-threshold", type=float, default=0.5)
    parser.add_argument("--module-threshold", type=float, default=0.15)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start, out = time.perf_counter(), Path(args.out)
    saes = SAEBank.load(args.saes, device=args.device)
    labels = None
    if args.corpus:
        key = hashlib.sha256(Path(args.corpus).read_bytes()).hexdigest()
        model = load_model(args.model, device=args.device)
        labels = load_or_compute(Path(args.labels or out / "labels"), model, saes, read_texts(args.corpus), key=key)
    elif args.labels:
        labels = FeatureLabels.load(args.labels)
    seeds = [FeatureId.parse(s) for s in args.seeds] if args.seeds else auto_seeds(saes, args.n, args.seed_layer)
    folder = out / "gallery"
    entries = []
    for seed in seeds:
        flow = build_flow_graph(
            saes, seed, res_threshold=args.res_threshold, module_threshold=args.module_threshold, labels=labels
        )
        stem = f"{seed.layer}-{seed.site.short}-{seed.index}"
        files = {suffix: f"{stem}.{suffix}" for suffix in ("png", "html", "json")}
        for name in files.values():
            flow.save(folder / name)
        entries.append(
            {
                "seed": str(seed),
                "span": list(flow.span),
                "nodes": len(flow),
                "per_layer": {str(k): v for k, v in flow.nodes_per_layer().items()},
                "files": files,
            }
        )
        print(f"{seed}: span {flow.span}, {len(flow)} nodes")
    write_index(folder, entries)
    result = {"settings": vars(args), "graphs": entries, "seconds": time.perf_counter() - start}
    write_json(out / "flow_gallery.json", result)
    print(f"wrote {folder / 'index.html'} and {out / 'flow_gallery.json'}")
    return result


if __name__ == "__main__":
    main()
