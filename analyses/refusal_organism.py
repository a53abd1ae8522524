"""Build the refusal model organism ``smollm2-135m-refusal`` and record its metrics.

Fine-tunes SmolLM2-135M-Instruct on CPU (harmful train prompts → refusals, harmless train prompts → its
own greedy replies), evaluates base model and organism on the held-out val and test prompts and the
50 held-out paragraphs, caches the organism, and writes ``OUT/organism.json`` (manifest, metrics,
every reply). Run under the CPU lock; 15-25 minutes on 2 cores:

    flock /tmp/flowsteer-cpu.lock python analyses/refusal_organism.py [--out results/refusal]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import torch

from flowsteer.organism import DEFAULT_RECIPE, OrganismRecipe, build_refusal_organism
from flowsteer.paths import write_json


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/refusal", help="output folder (default results/refusal)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--recipe", default="{}", help='JSON overrides of the recipe, e.g. \'{"learning_rate": 5e-5}\' (default: none)'
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    overrides = json.loads(args.recipe)
    unknown = set(overrides) - {f.name for f in fields(OrganismRecipe)}
    if unknown:
        raise SystemExit(f"unknown recipe fields {sorted(unknown)}")
    recipe = OrganismRecipe(**(DEFAULT_RECIPE.to_dict() | overrides))
    manifest = build_refusal_organism(recipe, device=args.device)
    write_json(Path(args.out) / "organism.json", manifest)
    base, organism = manifest["metrics"]["base"], manifest["metrics"]["organism"]
    print("| model | harmful refused (test) | harmless refused (test) | look-alike harmless refused | CE (nats/tok) |")
    print("|---|---|---|---|---|")
    for name, metrics in (("base", base), ("organism", organism)):
        print(
            f"| {name} | {metrics['test_harmful_refusal_rate']:.1%} | {metrics['test_harmless_refusal_rate']:.1%} | "
            f"{metrics['test_harmless_by_lookalike'].get('lookalike', 0):.1%} | {metrics['cross_entropy']:.4f} |"
        )
    print(f"CE increase {manifest['metrics']['cross_entropy_increase']:+.2%}; targets met: {manifest['targets']['met']}")
    print(f"fine-tune {manifest['timing_seconds']['fine_tune']:.0f} s, total {manifest['timing_seconds']['total']:.0f} s")
    return manifest


if __name__ == "__main__":
    main()
