"""Build the refusal organism and measure it against its targets, on the held-out test prompts.

    cpu-run python analyses/refusal_organism.py build      # fine-tune + cache (236 s once on 2 idle cores)
    cpu-run python analyses/refusal_organism.py evaluate   # base vs organism (179 s once on 2 idle cores)

``evaluate`` writes ``analyses/results/organism.json``: the manifest (recipe, data, timing, training
losses), the base model's and the organism's refusal of the 100 held-out harmful and 100 held-out
harmless test prompts (substring judge and log-odds), cross-entropy on the 50 held-out paragraphs,
which targets are met, and every mistake with its reply. ``build --recipe '{"learning_rate": 5e-5}'``
tries other hyper-parameters (the cache then holds that build).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from flowsteer import load_model
from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.models.embedded import DEFAULT_MODEL
from flowsteer.paths import write_json
from flowsteer.refusal.organism import DEFAULT_RECIPE, build_refusal_organism
from flowsteer.refusal.organism.build import TARGETS, evaluate_refusal_model, mistakes, summarise, targets_met
from flowsteer.refusal.organism.cache import organism_dir, read_manifest

RESULTS = Path(__file__).parent / "results"


def evaluate(out: Path, split: str) -> dict:
    manifest = read_manifest(organism_dir())
    rows = {}
    evaluations = {}
    for name in (DEFAULT_MODEL, REFUSAL_ORGANISM):
        start = time.perf_counter()
        model = load_model(name, device="cpu")
        evaluations[name] = evaluate_refusal_model(model, splits=(split,))
        rows[name] = summarise(evaluations[name]) | {"eval_seconds": time.perf_counter() - start}
        del model
    base, organism = rows[DEFAULT_MODEL], rows[REFUSAL_ORGANISM]
    increase = organism["cross_entropy"] / base["cross_entropy"] - 1
    result = {
        "script": "analyses/refusal_organism.py evaluate",
        "split": split,
        "manifest": manifest,
        "metrics": {"base": base, "organism": organism, "cross_entropy_increase": increase},
        "targets": TARGETS | {"met": targets_met(organism, base, split)},
        "mistakes": {"base": mistakes(evaluations[DEFAULT_MODEL]), "organism": mistakes(evaluations[REFUSAL_ORGANISM])},
        "organism_replies": {
            label: evaluations[REFUSAL_ORGANISM][split][label]["replies"] for label in ("harmful", "harmless")
        },
    }
    write_json(out, result)
    print("| model | harmful refused | harmless refused | look-alike harmless refused | log-odds>0 harmful | CE |")
    print("|---|---|---|---|---|---|")
    for name, m in rows.items():
        print(
            f"| {name} | {m[f'{split}_harmful_refusal_rate']:.1%} | {m[f'{split}_harmless_refusal_rate']:.1%} | "
            f"{m[f'{split}_harmless_by_lookalike'].get('lookalike', 0):.1%} | "
            f"{m[f'{split}_harmful_log_odds_refusal_rate']:.1%} | {m['cross_entropy']:.4f} |"
        )
    print(f"CE increase {increase:+.2%}; targets met: {result['targets']['met']}")
    print(
        f"fine-tune {manifest['timing_seconds']['fine_tune']:.0f} s, build {manifest['timing_seconds']['total']:.0f} s"
    )
    for kind, rows_ in result["mistakes"]["organism"][split].items():
        print(kind, [(r["instruction"], r["reply"][:60]) for r in rows_])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "evaluate"))
    parser.add_argument("--recipe", default="{}", help="build: JSON overrides of the recipe (default: none)")
    parser.add_argument("--split", default="test", choices=("val", "test"), help="evaluate: prompts (default test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "organism.json", help="evaluate: output JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.action == "build":
        manifest = build_refusal_organism(replace(DEFAULT_RECIPE, **json.loads(args.recipe)), device="cpu")
        print(json.dumps({k: v for k, v in manifest["training"].items() if k != "losses"}, indent=1))
        print("timing", manifest["timing_seconds"])
    else:
        evaluate(args.out, args.split)


if __name__ == "__main__":
    main()
