"""Choose the low-rank organism recipe on the validation prompts, then measure the choice once on test.

    python analyses/organism_recipe_search.py            # every candidate on val, the chosen one on test

Each candidate (learning rate x epochs, adapter rank 16) is trained from the same targets (computed once) and
evaluated on the 32 + 32 validation prompts (greedy 48 tokens, substring judge) and the 50 held-out
paragraphs. The chosen recipe is the one that meets the three targets on validation with the largest margin
(harmful refusal - 0.9, 0.1 - harmless refusal, 5% - CE increase: the smallest of the three); only it is then
evaluated on the 100 + 100 test prompts. Writes ``analyses/results/organism_recipe_search.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from flowsteer import load_model
from flowsteer.models.embedded import DEFAULT_MODEL
from flowsteer.models.loading import hooked_from_hf_dir, prepare
from flowsteer.paths import write_json
from flowsteer.refusal.organism import DEFAULT_RECIPE
from flowsteer.refusal.organism.build import (
    TARGETS,
    evaluate_refusal_model,
    summarise,
    train_organism,
    training_examples,
)

RESULTS = Path(__file__).parent / "results" / "organism_recipe_search.json"
# lr 2e-4 x 1 epoch, tried first (an interrupted run), refused 75% of harmful and 12.5% of harmless val prompts:
# too weak. The candidates train more. The run of 2026-12-06 (results/organism_recipe_search.log) measured only
# 5e-4 x 1 (78.1% / 15.6% on val) before it was stopped for time; 1e-3 x 2 was then built directly and met every
# target on val (results/organism_val.json), and became the recipe; 1e-3 x 1 was never measured.
CANDIDATES = [dict(learning_rate=5e-4, epochs=1), dict(learning_rate=1e-3, epochs=1),
              dict(learning_rate=1e-3, epochs=2)]


def margin(row: dict, base_ce: float, split: str) -> float:
    """The smallest slack over the three targets (negative: a target is missed)."""
    return min(
        row[f"{split}_harmful_refusal_rate"] - TARGETS["harmful_refusal_min"],
        TARGETS["harmless_refusal_max"] - row[f"{split}_harmless_refusal_rate"],
        TARGETS["cross_entropy_increase_max"] - (row["cross_entropy"] / base_ce - 1),
    )


def evaluate_candidate(examples, recipe, split: str) -> tuple[dict, dict]:
    hf_model, tokenizer, training, _ = train_organism(examples, recipe, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        hf_model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        model = prepare(hooked_from_hf_dir(Path(folder), device=torch.device("cpu"), dtype=torch.float32))
    evaluation = evaluate_refusal_model(model, splits=(split,))
    return summarise(evaluation), {k: v for k, v in training.items() if k != "losses"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    base = load_model(DEFAULT_MODEL, device="cpu")
    started = time.perf_counter()
    examples, data = training_examples(base, DEFAULT_RECIPE, progress=False)
    print(f"targets: {len(examples)} examples in {time.perf_counter() - started:.0f} s", flush=True)
    base_rows = {split: summarise(evaluate_refusal_model(base, splits=(split,))) for split in ("val", "test")}
    del base
    rows = []
    for overrides in CANDIDATES:
        recipe = replace(DEFAULT_RECIPE, **overrides)
        started = time.perf_counter()
        summary, training = evaluate_candidate(examples, recipe, "val")
        row = {"recipe": overrides, "val": summary, "training": training, "seconds": time.perf_counter() - started,
               "val_margin": margin(summary, base_rows["val"]["cross_entropy"], "val")}
        rows.append(row)
        print(f"{overrides}: harmful {summary['val_harmful_refusal_rate']:.3f} harmless "
              f"{summary['val_harmless_refusal_rate']:.3f} CE {summary['cross_entropy']:.4f} margin "
              f"{row['val_margin']:+.3f} ({training['wall_seconds'] / training['steps']:.2f} s/step)", flush=True)
    chosen = max(rows, key=lambda row: row["val_margin"])
    recipe = replace(DEFAULT_RECIPE, **chosen["recipe"])
    test, training = evaluate_candidate(examples, recipe, "test")
    result = {
        "script": "analyses/organism_recipe_search.py",
        "rule": "largest smallest-slack over the three targets on val; test evaluated once, for the chosen recipe",
        "targets": TARGETS,
        "base": base_rows,
        "data": data,
        "candidates": rows,
        "chosen": {"recipe": recipe.to_dict(), "test": test, "training": training,
                   "test_margin": margin(test, base_rows["test"]["cross_entropy"], "test")},
    }
    write_json(args.out, result)
    print(json.dumps({"chosen": chosen["recipe"], "test": {k: v for k, v in test.items() if "rate" in k}}, indent=1))


if __name__ == "__main__":
    main()
