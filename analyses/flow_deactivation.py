"""Causal deactivation of matched predecessors: the Table-1 analog and the r sweep (Feature Flow §5.2,
App. A.2, Table 1, Fig. 7), every strategy on the same targets and tokens.

At ``--layers`` (default: the paper's layers 6/12/18 of 26 scaled to this model's depth), for
random tokens of each text, up to ``--max-targets`` active residual features with an active top-1
predecessor are sampled; their active predecessors under each matching strategy (top-1, top-5, random
of top-5, permutation) are rescaled with r = 0 at that token only. The first ``--search-targets`` targets
per layer and token also get the ``greedy`` search (best single feature per site) and the ``exhaustive``
one (every subset of at most ``--max-subset`` of the active features among each site's top ``--top-m``
matches). Success rate and mean activation change, with 95% intervals (bootstrap over texts) and their
definitions, are reported on three target sets shared by every strategy (`deactivation_summary`), next to
the paper's Table 1. The r sweep rescales all active top-1 predecessors by each r and adds the relative
change of the next-token loss.

Writes ``OUT/flow_deactivation.json`` (tables, comparison, sweep) and ``.md``, every record to
``OUT/flow_deactivation_records.json`` (large; not kept in git) and figures ``OUT/flow_deactivation.png``
and ``OUT/flow_sweep.png``.

    python analyses/flow_deactivation.py --saes DIR --corpus texts.txt [--texts 35] [--search-targets 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from flowsteer.flow import paper, plots
from flowsteer.flow.deactivation import deactivation_records, rescale_sweep
from flowsteer.flow.deactivation_summary import summarize, sweep_summary
from flowsteer.flow.groups import DEACTIVATION_STRATEGIES
from flowsteer.flow.scores import LayerScores, add_permutations, layer_scores
from flowsteer.flow.tokens import read_texts
from flowsteer.flow.topology import scored_sites
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.paths import write_json
from flowsteer.saes import SAEBank
from flowsteer.sites import Site

R_VALUES = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def diagnostics(scores: dict[Site, LayerScores], records: list) -> dict:
    """Why top-1 might not beat random-of-top-5: how distinct the top-1 match is among the top 5
    (similarity of rank 1 vs ranks 2-5) for the predecessors of the sampled targets."""
    out = {}
    for site, layer in scores.items():
        targets = sorted({rec.feature for rec in records if rec.site == str(site) and rec.strategy == "top1"})
        if not targets:
            continue
        index = torch.tensor(targets)
        per_key = {}
        for key, match in layer.matches.items():
            top = match.scores[index]
            per_key[key] = {
                "mean_top1": float(top[:, 0].mean()),
                "mean_rank2_to_5": float(top[:, 1:5].mean()),
                "mean_gap_top1_top2": float((top[:, 0] - top[:, 1]).mean()),
            }
        out[str(site)] = per_key
    return out


def bank_facts(saes) -> dict:
    """The bank's sites and training size, so the JSON says which bank the numbers come from."""
    training = getattr(saes, "info", {}).get("training", {})
    keep = ("architecture", "d_sae", "k", "tokens", "passes", "max_norm_ratio", "steps")
    return {"sites": [str(s) for s in sorted(saes)], **{key: training[key] for key in keep if key in training}}


METHODS = (  # our label, strategy key, the paper's Table-1 row to compare with
    ("top-1 cosine", "top1", "top-1 cosine"),
    ("top-5", "top5", None),
    ("random of top-5", "random_top5", None),
    ("permutation (SAE Match)", "permutation", None),
    ("greedy (best single feature per site, then together)", "greedy", None),
    ("exhaustive (every subset of <= {s} active top-{m} predecessors)", "exhaustive",
     "exhaustive search (upper bound)"),
)
SET_TITLES = {"all_targets": "All sampled targets", "common_targets": "Targets where every matching strategy "
              "found an active predecessor", "searched_targets": "Targets that also got the searches"}


def _cell(estimate: dict | None, percent: bool) -> str:
    if estimate is None:
        return "-"
    if percent:
        return f"{estimate['value']:.1%} [{estimate['low']:.1%}, {estimate['high']:.1%}]"
    return f"{estimate['value']:.3f} [{estimate['low']:.3f}, {estimate['high']:.3f}]"


def markdown(result: dict) -> str:
    """The three equal-terms tables with n, intervals and definitions, the paired comparisons, the sweep."""
    summary, settings = result["summary"], result["settings"]
    labels = {key: label.format(s=settings["max_subset"], m=settings["top_m"]) for label, key, _ in METHODS}
    paper_rows = {key: paper.TABLE_1[ref] for _, key, ref in METHODS if ref}
    defs = summary["definitions"]
    lines = [
        "# Causal deactivation (Feature Flow Table 1 analog)",
        "",
        f"Bank `{settings['saes']}`, layers {settings['layers']}, {settings['texts_used']} texts x "
        f"{settings['tokens_per_text']} tokens, up to {settings['max_targets']} targets per layer and token, r = 0.",
        *([f"Bank: {settings['bank_note']}."] if settings.get("bank_note") else []),
        "",
        f"- **success rate**: {defs['success_rate']}.",
        f"- **mean activation change**: {defs['mean_activation_change']}.",
        f"- intervals: {defs['interval']}.",
        "",
    ]
    for name in ("all_targets", "common_targets", "searched_targets"):
        table = summary.get(name)
        if not table:
            continue
        n = next(iter(table.values()))["n"]
        lines += [f"## {SET_TITLES[name]} (n = {n}, the same for every row)", "", f"{defs['sets'][name]}.", "",
                  "| method | n | success rate (target's activation 0 after the edit) | mean activation change "
                  "(1 - z_new/z_old) | targets with nothing to edit | features edited (mean) | paper (Gemma 2 2B) |",
                  "|---|---|---|---|---|---|---|"]
        for key, row in table.items():
            ref = paper_rows.get(key)
            ref_text = f"{ref['success_rate']:.0%} / {ref['mean_activation_change']:.2f}" if ref else "-"
            lines.append(f"| {labels.get(key, key)} | {row['n']} | {_cell(row['success_rate'], True)} | "
                         f"{_cell(row['mean_activation_change'], False)} | {row['no_active_predecessor']} | "
                         f"{row['mean_features_edited']:.2f} | {ref_text} |")
        lines.append("")
    for title, key in (("top-1 minus random of top-5", "top1_vs_random_top5"),):
        for name, comp in summary.get(key, {}).items():
            lines.append(f"- {title} on {name.replace('_', ' ')} (n = {comp['n']}, paired): success "
                         f"{_cell(comp['success_rate']['difference'], True)} ({comp['success_rate']['verdict']}), "
                         f"activation change {_cell(comp['mean_activation_change']['difference'], False)} "
                         f"({comp['mean_activation_change']['verdict']})")
    if comp := summary.get("exhaustive_vs_greedy"):
        lines.append(f"- exhaustive minus greedy on the searched targets (n = {comp['n']}, paired): success "
                     f"{_cell(comp['success_rate']['difference'], True)} ({comp['success_rate']['verdict']}), "
                     f"activation change {_cell(comp['mean_activation_change']['difference'], False)} "
                     f"({comp['mean_activation_change']['verdict']})")
    if stats := summary.get("exhaustive_search"):
        lines.append(f"- exhaustive pool: {stats['pool_size_mean']:.2f} features on average (max "
                     f"{stats['pool_size_max']}), {stats['edits_tried_mean']:.1f} subsets tried per target; greedy "
                     f"tried {stats['greedy_edits_tried_mean']:.1f} edits per target")
    if result.get("sweep"):
        rs = list(result["sweep"])
        lines += ["", "## r sweep (all active top-1 predecessors rescaled by r)", "",
                  "| r | targets | mean activation change | deactivated | relative loss change |",
                  "|---|---|---|---|---|"]
        for r in rs:
            row = result["sweep"][r]
            lines.append(f"| {r} | {row['targets']} | {_cell(row['activation_change'], False)} | "
                         f"{_cell(row['deactivated'], True)} | {_cell(row['relative_loss_change'], True)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True)
    parser.add_argument("--corpus", required=True, help="texts file (.txt one per line, or .jsonl)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="target residual layers")
    parser.add_argument("--texts", type=int, default=paper.DEACTIVATION_TEXTS)
    parser.add_argument("--tokens-per-text", type=int, default=paper.DEACTIVATION_TOKENS)
    parser.add_argument("--max-targets", type=int, default=paper.DEACTIVATION_TARGETS)
    parser.add_argument("--strategies", nargs="+", default=list(DEACTIVATION_STRATEGIES),
                        choices=DEACTIVATION_STRATEGIES)
    parser.add_argument("--search-targets", type=int, default=0,
                        help="targets per layer and token that also get the greedy and exhaustive searches")
    parser.add_argument("--top-m", type=int, default=5, help="the exhaustive pool: active features among each "
                        "predecessor site's top m matches")
    parser.add_argument("--max-subset", type=int, default=3, help="the exhaustive search's largest subset")
    parser.add_argument("--r-values", type=float, nargs="+", default=list(R_VALUES))
    parser.add_argument("--sweep-texts", type=int, default=10)
    parser.add_argument("--sweep-targets", type=int, default=5)
    parser.add_argument("--horizon", type=int, default=32, help="tokens after the edit the loss is measured over")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bank-note", default="", help="how the bank was built, kept in the JSON's settings")
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    start, out = time.perf_counter(), Path(args.out)
    model = load_model(args.model, device=args.device)
    saes = SAEBank.load(args.saes, device=args.device)
    layers = args.layers or paper.scaled_layers(model.cfg.n_layers)
    sites = [site for site in scored_sites(saes) if site.layer in layers and site.kind == "resid_post"]
    if not sites:
        raise ValueError(f"no residual SAEs with predecessors at layers {layers}")
    scores = {site: layer_scores(saes, site, k=max(5, args.top_m)) for site in sites}
    if "permutation" in args.strategies:
        for layer in scores.values():
            add_permutations(saes, layer)
    texts = read_texts(args.corpus)
    records = deactivation_records(
        model,
        saes,
        scores,
        texts[: args.texts],
        strategies=args.strategies,
        tokens_per_text=args.tokens_per_text,
        max_targets=args.max_targets,
        search_targets=args.search_targets,
        top_m=args.top_m,
        max_subset=args.max_subset,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    summary = summarize(records, args.strategies)
    sweep = rescale_sweep(
        model,
        saes,
        scores,
        texts[: args.sweep_texts],
        args.r_values,
        max_targets=args.sweep_targets,
        horizon=args.horizon,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )
    sweep_result = sweep_summary(sweep)
    result = {
        "settings": vars(args)
        | {"layers": layers, "sites": [str(s) for s in sites], "texts_used": min(len(texts), args.texts),
           "bank": bank_facts(saes)},
        "summary": summary,
        "paper": paper.TABLE_1,
        "diagnostics": diagnostics(scores, records),
        "sweep": sweep_result,
        "seconds": time.perf_counter() - start,
    }
    write_json(out / "flow_deactivation.json", result)
    raw = {"records": [asdict(rec) for rec in records], "sweep_records": [asdict(rec) for rec in sweep]}
    write_json(out / "flow_deactivation_records.json", raw)
    plots.plot_deactivation(summary, paper.TABLE_1, out / "flow_deactivation.png")
    if sweep_result:
        plots.plot_sweep(sweep_result, out / "flow_sweep.png")
    text = markdown(result)
    (out / "flow_deactivation.md").write_text(text)
    print(text)
    print(f"wrote {out / 'flow_deactivation.json'} ({result['seconds']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
