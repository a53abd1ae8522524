"""Data-driven feature groups (Feature Flow §5.1, App. A.1, Figs. 3-5, 12, 13, 15a).

For random tokens of each corpus, every active residual feature is put in one of eight groups by
which of its matched predecessors (previous residual, MLP, attention) are active on the same token,
under each matching strategy (top-1, top-5, random of top-5, SAE Match permutation). Reports
per-layer group shares, the group transition matrix (beside the paper's Fig. 13) and Mann-Whitney U
tests between groups (beside the paper's §5.1 numbers).

Writes ``OUT/flow_groups.json`` (summary), ``OUT/flow_groups_tests.json`` (every test) and figures
``OUT/flow_groups_<strategy>.png`` and ``OUT/flow_transition.png``.

    python analyses/flow_groups.py --saes DIR --corpus fineweb=a.txt --corpus code=b.jsonl [--texts 250]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from flowsteer.flow import paper, plots
from flowsteer.flow.groups import (
    BITS,
    DEACTIVATION_STRATEGIES,
    GROUPS,
    group_contains,
    group_records_by_strategy,
    group_shares,
    mann_whitney,
    transition_matrix,
)
from flowsteer.flow.scores import add_permutations, layer_scores
from flowsteer.flow.tokens import read_texts
from flowsteer.flow.topology import PREDECESSORS, predecessor_sites, scored_sites
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.paths import write_json
from flowsteer.saes import SAEBank


def corpora(specs: list[str], texts: int) -> dict[str, list[str]]:
    """``NAME=FILE`` or ``FILE`` specs -> {name: first ``texts`` texts}."""
    found = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        found[name or Path(path).stem] = read_texts(path)[:texts]
    return found


def paper_comparison(tests: list[dict]) -> dict:
    def share(selected):
        return {
            "tests": len(selected),
            "share": sum(t["p"] < paper.ALPHA for t in selected) / len(selected) if selected else None,
        }

    pair = [t for t in tests if {t["group_a"], t["group_b"]} == {"From MLP", "From MLP & ATT"}]
    mlp_both = [
        t
        for t in tests
        if t["score"] == "res" and all(group_contains(GROUPS.index(t[g]), "mlp") for g in ("group_a", "group_b"))
    ]
    return {
        "From MLP vs From MLP & ATT": {
            "ours": {key: share([t for t in pair if t["score"] == key]) for key in BITS},
            "paper": paper.MLP_VS_MLP_ATT,
        },
        "MLP active in both groups, differ in s^R": {
            "ours": share(mlp_both),
            "paper": paper.MLP_ACTIVE_IN_BOTH_DIFFER_IN_RES,
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True)
    parser.add_argument("--corpus", action="append", required=True, help="NAME=FILE (or FILE); repeat per dataset")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--texts", type=int, default=paper.GROUP_TEXTS, help="texts per dataset (paper: 250)")
    parser.add_argument("--tokens-per-text", type=int, default=paper.GROUP_TOKENS)
    parser.add_argument("--max-features", type=int, default=None, help="features per layer and token (default all)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--strategies", nargs="+", default=list(DEACTIVATION_STRATEGIES),
                        choices=DEACTIVATION_STRATEGIES)
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="residual layers (default all)")
    parser.add_argument(
        "--complete",
        action="store_true",
        help="only residual sites whose three predecessors (res, mlp, att) all have SAEs",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start, out = time.perf_counter(), Path(args.out)
    model = load_model(args.model, device=args.device)
    saes = SAEBank.load(args.saes, device=args.device)
    sites = [site for site in scored_sites(saes) if args.layers is None or site.layer in args.layers]
    if args.complete:
        sites = [site for site in sites if len(predecessor_sites(saes, site)) == len(PREDECESSORS)]
    if not sites:
        raise ValueError("no residual sites with predecessors to analyse; check --layers and --complete")
    scores = {site: layer_scores(saes, site, k=5) for site in sites}
    if "permutation" in args.strategies:
        for layer in scores.values():
            add_permutations(saes, layer)
    data = corpora(args.corpus, args.texts)
    result: dict = {
        "settings": vars(args) | {"datasets": {k: len(v) for k, v in data.items()}, "sites": [str(s) for s in sites]},
        "groups": list(GROUPS),
        "strategies": {},
    }
    all_tests = []
    by_strategy = None
    for name, texts in data.items():
        by_strategy = group_records_by_strategy(
            model,
            saes,
            scores,
            texts,
            strategies=args.strategies,
            dataset=name,
            seed=args.seed,
            tokens_per_text=args.tokens_per_text,
            max_features=args.max_features,
            max_tokens=args.max_tokens,
            records=by_strategy,
        )
    for strategy in args.strategies:
        records = by_strategy[strategy]
        counts = np.bincount(np.asarray(records.group, dtype=int), minlength=len(GROUPS))
        entry = {
            "records": len(records),
            "overall_shares": dict(zip(GROUPS, (counts / max(counts.sum(), 1)).tolist(), strict=True)),
            "shares": group_shares(records),
            "shares_by_dataset": {},
        }
        for name in data:
            entry["shares_by_dataset"][name] = group_shares(records, dataset=name)
        plots.plot_group_shares(entry["shares"], out / f"flow_groups_{strategy}.png", title=f"groups, {strategy}")
        if strategy == "top1":
            matrix = transition_matrix(records)
            reference = np.asarray(paper.FIG_13)
            both = ~np.isnan(matrix)
            entry["transition_matrix"] = {
                "order": list(GROUPS),
                "ours": np.where(both, matrix, None).tolist(),
                "paper": paper.FIG_13,
                "mean_abs_difference_off_diagonal": float(
                    np.abs(matrix - reference)[both & ~np.eye(8, dtype=bool)].mean()
                )
                if (both & ~np.eye(8, dtype=bool)).any()
                else None,
            }
            plots.plot_transition(matrix, out / "flow_transition.png")
            tests = mann_whitney(records)
            entry["mann_whitney"] = tests["share_significant"] | {"alpha": tests["alpha"]}
            entry["paper_comparison"] = paper_comparison(tests["tests"])
            all_tests = tests["tests"]
        result["strategies"][strategy] = entry
        print(
            f"{strategy:12s} {len(records):6d} records  "
            + "  ".join(f"{g.removeprefix('From ')} {s:.2f}" for g, s in entry["overall_shares"].items())
        )
    write_json(out / "flow_groups.json", result)
    write_json(out / "flow_groups_tests.json", all_tests)
    if "top1" in result["strategies"]:
        for label, row in result["strategies"]["top1"]["paper_comparison"].items():
            print(f"{label}: ours {row['ours']}  paper {row['paper']}")
    print(f"wrote {out / 'flow_groups.json'} ({time.perf_counter() - start:.1f} s)")
    return result


if __name__ == "__main__":
    main()
