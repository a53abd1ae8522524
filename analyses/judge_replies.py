"""Real replies for the reply judge's hand-labelled set: the base model, the refusal organism and every bypass
method, greedy, on validation prompts (never the test prompts the comparison reports on).

    python analyses/judge_replies.py            # writes analyses/results/judge_real_replies.jsonl

Each bypass method is fitted on the organism at layer 12 (the direction: Arditi's selection among layer 12's
post-instruction positions) with the comparison's default settings. The rows are then labelled by hand into
``data/judge/labelled.jsonl`` (see docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flowsteer import chat_prompts, generate_with_patches, load_model
from flowsteer.models import DEFAULT_MODEL, REFUSAL_ORGANISM
from flowsteer.paths import atomic_file
from flowsteer.refusal.bypass import METHODS, bypass_prompts, fit_method, linear_direction, spread
from flowsteer.refusal.prompts import load_instructions

OUT = Path(__file__).parent / "results" / "judge_real_replies.jsonl"


def replies(model, instructions, patches=(), max_new_tokens=48) -> list[str]:
    return generate_with_patches(model, chat_prompts(model, instructions), patches, max_new_tokens=max_new_tokens,
                                 batch_size=16).texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-method", type=int, default=8, help="harmful val prompts per source (default 8)")
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    harmful = [i.text for i in spread(load_instructions("harmful", "val"), args.per_method)]
    harmless = [i.text for i in spread(load_instructions("harmless", "val"), args.per_method // 2)]
    rows = []

    def add(source, instructions, texts, label_hint):
        rows.extend({"source": source, "split": "val", "kind": label_hint, "instruction": i, "reply": t}
                    for i, t in zip(instructions, texts, strict=True))
        print(f"{source}: {len(texts)} replies", flush=True)

    base = load_model(DEFAULT_MODEL, device="cpu")
    add("base", harmful, replies(base, harmful), "harmful")
    add("base", harmless, replies(base, harmless), "harmless")
    del base
    organism = load_model(REFUSAL_ORGANISM, device="cpu")
    add("organism", harmful, replies(organism, harmful), "harmful")
    add("organism", harmless, replies(organism, harmless), "harmless")
    prompts = bypass_prompts(organism, n_train=64, n_val=32, n_test=8)
    direction = linear_direction(organism, prompts, [args.layer])
    for name in METHODS:
        steering = fit_method(organism, name, prompts, direction, layer=args.layer, steps=60, flow_steps=200)
        add(name, harmful, replies(organism, harmful, steering.patches), "harmful")
    with atomic_file(args.out) as handle:
        for number, row in enumerate(rows):
            handle.write(json.dumps({"id": f"real-{number:03d}", **row}) + "\n")
    print(f"wrote {len(rows)} replies to {args.out}")


if __name__ == "__main__":
    main()
