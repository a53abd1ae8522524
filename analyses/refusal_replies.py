"""Regenerate ``data/refusal/harmless_replies.jsonl``: SmolLM2-135M-Instruct's own greedy replies (48 new
tokens) to the harmless train instructions, the self-distillation targets of the refusal organism.

    cpu-run python analyses/refusal_replies.py      # ~3 min on 2 CPU cores

Replies the substring judge calls refusals are kept in the file with ``refusal_like: true`` and no ids
(the organism does not train on them). Changing this file changes the data hash recorded in the
organism's manifest; bump ``REFUSAL_RECIPE_VERSION`` so that cached organisms are rebuilt.
"""

from __future__ import annotations

import json

import torch

from flowsteer import load_model
from flowsteer.paths import atomic_file
from flowsteer.refusal.organism.recipe import DEFAULT_RECIPE
from flowsteer.refusal.organism.targets import self_distilled_examples
from flowsteer.refusal.prompts import data_dir, load_instructions


def main() -> None:
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    items = load_instructions("harmless", "train")
    examples, dropped = self_distilled_examples(model, items, max_new_tokens=DEFAULT_RECIPE.max_reply_tokens)
    kept = {example.instruction.id: example.reply_ids for example in examples}
    refused = {row["id"]: row["reply"] for row in dropped}
    with atomic_file(data_dir() / "harmless_replies.jsonl") as handle:
        for item in items:
            if item.id in kept:
                ids = list(kept[item.id])
                text = model.tokenizer.decode(ids, skip_special_tokens=True)
                row = {"id": item.id, "reply": text, "reply_ids": ids, "refusal_like": False}
            else:
                row = {"id": item.id, "reply": refused[item.id], "reply_ids": None, "refusal_like": True}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} replies ({len(dropped)} refusal-like) to {data_dir() / 'harmless_replies.jsonl'}")


if __name__ == "__main__":
    main()
