"""Theme steering under the comparison protocol (issue 16, item 1) on the embedded model.

For each theme: the theme texts are split into a ``rank`` part (ranks SAE features, chooses the seed feature and
its flow graph, builds the difference-in-means vector) and a ``score`` part (trains the theme classifier that
scores the outputs); the prompts into ``val`` and ``test``. Five rows: the unsteered model, the prompt that asks for
the theme, ActAdd at the initial feature's ‖Δh‖, the initial (seed) feature, the seed's flow graph, each contender
with the same number of settings, chosen on val by B×C and reported once on test with a fresh seed
(`flowsteer.steering.protocol`).

SAEs: the demo's default bank (TopK, width 2304, k = 32, res/mlp/att at layers 8-12; `flowsteer.saes.default_bank`,
trained once and cached; ``--bank-tokens``/``--bank-passes`` train it on less), not the 30-layer flow bank of
analyses/steering_*.py, which takes far longer to train.

    python analyses/steering_protocol.py                     # writes analyses/results/steering_protocol.json and .md
    python analyses/steering_protocol.py --themes wedding    # one theme per job; themes already done are kept
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's flowsteer, wherever run from

import torch  # noqa: E402

from flowsteer.models import load_model  # noqa: E402
from flowsteer.paths import write_json  # noqa: E402
from flowsteer.saes import SAEBank, default_bank  # noqa: E402
from flowsteer.saes.default import DEFAULT_CONFIG  # noqa: E402
from flowsteer.steering import load_themes, typical_activations  # noqa: E402
from flowsteer.steering.evaluate import SteeringScorer  # noqa: E402
from flowsteer.steering.protocol import (  # noqa: E402
    LABELS,
    SteeringSettings,
    compare_theme,
    markdown_table,
    prepare_theme,
    theme_classifier,
)
from flowsteer.steering.splits import load_prompts, steering_splits  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
THEMES = ("religion", "wedding", "programming")


def classifier_check(classifier, splits) -> dict:
    """The scorer's accuracy and per-theme AUC on the ``rank`` texts, which it was not trained on."""
    texts = [t for name in sorted(splits.rank) for t in splits.rank[name]]
    labels = [name for name in sorted(splits.rank) for _ in splits.rank[name]]
    probs = classifier.probabilities(texts)
    predicted = [classifier.classes[i] for i in probs.argmax(-1).tolist()]
    auc = {}
    for theme in THEMES:
        p = probs[:, classifier.classes.index(theme)]
        on = torch.tensor([label == theme for label in labels])
        a, b = p[on], p[~on]
        auc[theme] = float((a[:, None] > b[None, :]).float().mean() + 0.5 * (a[:, None] == b[None, :]).float().mean())
    return {"accuracy_on_rank_texts": sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels),
            "auc_on_rank_texts": auc, "n_texts": len(texts), "classes": classifier.classes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--themes", nargs="+", default=list(THEMES))
    parser.add_argument("--val-prompts", type=int, default=4)
    parser.add_argument("--test-prompts", type=int, default=6)
    parser.add_argument("--samples-val", type=int, default=6)
    parser.add_argument("--samples-test", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--bank-tokens", type=int, default=DEFAULT_CONFIG.tokens,
                        help="SAE training tokens per site (default: the demo bank's)")
    parser.add_argument("--bank-passes", type=int, default=DEFAULT_CONFIG.passes)
    parser.add_argument("--bank", help="an existing SAE bank folder to use instead of the demo bank")
    parser.add_argument("--out", default=str(RESULTS / "steering_protocol"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("STEER_THREADS", 1)))
    start = time.perf_counter()
    log = lambda message: print(f"[{time.perf_counter() - start:6.0f}s] {message}", flush=True)  # noqa: E731

    model = load_model(device="cpu")
    if args.bank:
        bank = SAEBank.load(args.bank, model)
        bank.info["path"] = args.bank
    else:
        bank = default_bank(model, config=replace(DEFAULT_CONFIG, tokens=args.bank_tokens, passes=args.bank_passes))
    units = typical_activations(model, bank)
    log(f"bank {bank.info.get('path')}: {len(bank)} SAEs; units measured")
    splits = steering_splits(load_themes(), load_prompts(), n_val=args.val_prompts, n_test=args.test_prompts,
                             seed=args.split_seed)
    classifier = theme_classifier(splits)
    settings = SteeringSettings(samples_val=args.samples_val, samples_test=args.samples_test,
                                max_new_tokens=args.new_tokens)
    report = {
        "model": str(model.cfg.model_name),
        "bank": {"path": bank.info.get("path"), "sites": [str(s) for s in sorted(bank)],
                 "tokens": None if args.bank else args.bank_tokens, "passes": None if args.bank else args.bank_passes,
                 "metrics": bank.info.get("metrics"), "training": bank.info.get("training")},
        "splits": {**splits.sizes(), "val": splits.val, "test": splits.test},
        "classifier": classifier_check(classifier, splits),
        "settings": asdict(settings),
        "budget": settings.budget,
        "themes": {},
    }
    previous = Path(args.out + ".json")
    if previous.is_file():  # one job per theme: keep the themes done before under the same settings and splits
        done = json.loads(previous.read_text())
        if all(done.get(key) == json.loads(json.dumps(report[key])) for key in ("settings", "splits", "bank", "model")):
            report["themes"] = {t: r for t, r in done["themes"].items() if t not in args.themes}
            report["seconds_before"] = done.get("seconds", 0) + done.get("seconds_before", 0)
        else:
            log("the previous results used other settings, splits or SAEs: starting afresh")
    for i, theme in enumerate(args.themes):
        steering = prepare_theme(model, bank, splits, theme)
        log(f"{theme}: seed {steering.seed}, graph {len(steering.graph)} nodes over {steering.graph.span}")
        scorer = SteeringScorer(model, classifier)
        seeds = (100 * i + 1, 100 * i + 2)
        report["themes"][theme] = compare_theme(model, bank, splits, steering, scorer, units=units, settings=settings,
                                                seeds=seeds)
        report["seconds"] = time.perf_counter() - start
        write_json(Path(args.out + ".json"), report)
        log(f"{theme} done\n" + markdown_table(report["themes"][theme]))
    report["themes"] = {t: report["themes"][t] for t in THEMES + tuple(args.themes) if t in report["themes"]}
    write_json(Path(args.out + ".json"), report)
    Path(args.out + ".md").write_text(markdown(report))
    log(f"wrote {args.out}.json and .md")


def markdown(report: dict) -> str:
    check = report["classifier"]
    s = report["settings"]
    lines = [
        "# Theme steering under the comparison protocol",
        "",
        f"Model {report['model']}; SAEs: {len(report['bank']['sites'])} TopK SAEs at "
        + ", ".join(report["bank"]["sites"]) + (f" ({report['bank']['path']})" if report["bank"]["tokens"] is None else
        f" (the demo's default bank's sites, width and k, trained on {report['bank']['tokens']:,} tokens x "
        f"{report['bank']['passes']} passes per site)") + ". "
        f"Budget: {report['budget']} settings per contender, chosen on {report['splits']['val_prompts']} val prompts "
        f"x {s['samples_val']} samples by B×C, reported once on {report['splits']['test_prompts']} test prompts x "
        f"{s['samples_test']} samples with a fresh seed; {s['max_new_tokens']} new tokens, top-p {s['top_p']}, "
        f"T {s['temperature']}. 95% bootstrap intervals over samples; 'no difference' where intervals overlap.",
        "",
        f"Scorer: theme classifier trained on the score texts only; on the {check['n_texts']} rank texts (held out "
        f"for it) accuracy {check['accuracy_on_rank_texts']:.2f}, AUC "
        + ", ".join(f"{t} {v:.2f}" for t, v in check["auc_on_rank_texts"].items()) + ".",
        "",
    ]
    for theme, result in report["themes"].items():
        lines += [f"## {theme}", "",
                  f"Seed feature {result['seed_feature']} (flow graph {result['graph_nodes']} nodes, layers "
                  f"{result['graph_span'][0]}-{result['graph_span'][1]}); ActAdd vector ‖r‖ = "
                  f"{result['actadd_vector_norm']:.2f} at the seed's site; coherence reference perplexity "
                  f"{result['reference_perplexity']:.1f}.", "", markdown_table(result), "",
                  "Pairwise on " + LABELS["activation_score"] + ":", ""]
        lines += [f"- {p['first']} vs {p['second']}: {p['verdict']}" for p in result["pairwise"]]
        lines += ["", "ActAdd's ‖Δh‖ per token against the initial feature's, per setting (val, measured):", "",
                  "| setting | initial feature | ActAdd | graph |", "|---|---|---|---|"]
        norms = result["delta_norm_per_token"]
        val = {name: [r for r in norms[name] if r["split"] == "val"] for name in ("initial_feature", "actadd", "graph")}
        for k, (f, a, g) in enumerate(zip(val["initial_feature"], val["actadd"], val["graph"], strict=True)):
            lines.append(f"| {k} (feature s={f['setting']['s']}, graph s={g['setting']['s']}) | {f['value']:.2f} | "
                         f"{a['value']:.2f} | {g['value']:.2f} |")
        lines += ["", "Examples (test, first sample of the first prompts):", ""]
        for method, texts in result["examples"].items():
            lines += [f"- **{method}**: " + " / ".join(repr(t)[1:-1] for t in texts[:2])]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
