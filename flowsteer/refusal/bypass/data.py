"""The prompt sets of a refusal-bypass comparison: chat-formatted train/val prompts and held-out test
instructions, drawn from `flowsteer.refusal.prompts`'s fixed splits (evenly spread subsets when smaller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from transformer_lens import HookedTransformer

from flowsteer.models.chat import chat_prompts
from flowsteer.refusal.prompts import Instruction, load_instructions

T = TypeVar("T")


def spread(items: Sequence[T], n: int | None) -> list[T]:
    """``n`` items evenly spread over ``items`` (all of them when ``n`` is None or too large); keeps
    the files' category strata roughly balanced in a small subset."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise ValueError(f"a subset needs at least one item, got n={n}")
    return [items[(i * len(items)) // n] for i in range(n)]


@dataclass
class BypassPrompts:
    """Chat-formatted training and validation prompts (fitting, early stopping, direction selection) and the
    validation and test instructions every method is judged on (`items`)."""

    harmful_train: list[str]
    harmless_train: list[str]
    harmful_val: list[str]
    harmless_val: list[str]
    harmful_test: list[Instruction]
    harmless_test: list[Instruction]
    harmful_val_items: list[Instruction]
    harmless_val_items: list[Instruction]

    def items(self, label: str, split: str) -> list[Instruction]:
        """The ``label`` ("harmful" / "harmless") instructions of ``split`` ("val" / "test")."""
        if label not in ("harmful", "harmless") or split not in ("val", "test"):
            raise ValueError(f"items(label, split) takes harmful/harmless and val/test, got {label!r}, {split!r}")
        return getattr(self, f"{label}_{split}" + ("_items" if split == "val" else ""))

    def sizes(self) -> dict[str, int]:
        return {name: len(value) for name, value in vars(self).items()}


def bypass_prompts(
    model: HookedTransformer,
    *,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = 50,
) -> BypassPrompts:
    """The refusal data's train / val / test splits, each limited to ``n_*`` prompts per label."""

    def items(label: str, split: str, n: int | None) -> list[Instruction]:
        return spread(load_instructions(label, split), n)

    def prompts(label: str, split: str, n: int | None) -> list[str]:
        return chat_prompts(model, [item.text for item in items(label, split, n)])

    return BypassPrompts(
        prompts("harmful", "train", n_train),
        prompts("harmless", "train", n_train),
        prompts("harmful", "val", n_val),
        prompts("harmless", "val", n_val),
        items("harmful", "test", n_test),
        items("harmless", "test", n_test),
        items("harmful", "val", n_val),
        items("harmless", "val", n_val),
    )
