"""The refusal prompt sets in ``data/refusal/``: harmful and harmless instructions with fixed splits,
the refusal replies used to build the refusal organism, and plain paragraphs for cross-entropy checks.

All text was written for flowsteer. Splits (``train`` / ``val`` / ``test``) are stored in the files, so
they never change between runs; they were drawn once, stratified by category (and, for harmless
prompts, by ``lookalike``: a benign request phrased like a harmful one, e.g. "Explain how to kill a
Python process.").

>>> harmful = instructions("harmful", "train")      # list[str]
>>> rows = load_instructions("harmless", "test")    # list[Instruction] with category, lookalike
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from flowsteer import resources

Label = Literal["harmful", "harmless"]
Split = Literal["train", "val", "test"]
LABELS: tuple[Label, ...] = ("harmful", "harmless")
SPLITS: tuple[Split, ...] = ("train", "val", "test")
FILES = ("harmful.jsonl", "harmless.jsonl", "refusals.jsonl", "paragraphs.jsonl", "harmless_replies.jsonl")


class RefusalDataError(RuntimeError):
    """The refusal data files are missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Instruction:
    """One user instruction with its label, category and fixed split."""

    id: str
    text: str
    label: Label
    category: str
    split: Split
    lookalike: bool = False


@dataclass(frozen=True)
class RefusalReply:
    """A hand-written refusal; ``category`` is ``general`` or the harmful category it is meant for."""

    id: str
    text: str
    category: str


@dataclass(frozen=True)
class HarmlessReply:
    """SmolLM2-135M-Instruct's own greedy reply (48 new tokens) to a harmless train instruction.

    ``reply_ids`` are the generated token ids (ending in ``<|im_end|>`` when the reply ended early); they
    are stored because decoding and re-encoding does not always give the same ids. ``refusal_like``
    replies (the substring judge calls them refusals) have no ids and are not trained on.
    """

    id: str
    text: str
    reply_ids: tuple[int, ...] | None
    refusal_like: bool


def data_dir() -> Path:
    """The refusal prompt folder: ``refusal/`` of `flowsteer.resources.data_dir` (``$FLOWSTEER_DATA`` if set)."""
    path = resources.data_dir() / "refusal"
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise RefusalDataError(
            f"refusal data not found: {path} lacks {', '.join(missing)}. Reinstall flowsteer, or point "
            "FLOWSTEER_DATA at a folder holding refusal/{" + ",".join(FILES) + "}"
        )
    return path


def _read_jsonl(name: str) -> list[dict]:
    path = data_dir() / name
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise RefusalDataError(f"{path}:{number} is not valid JSON: {error}") from None
    return rows


@cache
def _all_instructions() -> tuple[Instruction, ...]:
    result = []
    for label in LABELS:
        for row in _read_jsonl(f"{label}.jsonl"):
            try:
                item = Instruction(
                    row["id"], row["instruction"], label, row["category"], row["split"], bool(row.get("lookalike"))
                )
            except KeyError as error:
                raise RefusalDataError(f"{label}.jsonl row {row!r} lacks the field {error}") from None
            if item.split not in SPLITS:
                raise RefusalDataError(f"{item.id}: split {item.split!r} is not one of {SPLITS}")
            result.append(item)
    ids = [item.id for item in result]
    if len(set(ids)) != len(ids):
        raise RefusalDataError("duplicate ids in the refusal data")
    return tuple(result)


def load_instructions(
    label: Label | None = None, split: Split | None = None, category: str | None = None
) -> list[Instruction]:
    """Instructions filtered by label, split and category (None = all), in file order."""
    if label is not None and label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {LABELS}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return [
        item
        for item in _all_instructions()
        if (label is None or item.label == label)
        and (split is None or item.split == split)
        and (category is None or item.category == category)
    ]


def instructions(label: Label, split: Split | None = None) -> list[str]:
    """The instruction texts of one label (and split)."""
    return [item.text for item in load_instructions(label, split)]


def categories(label: Label) -> list[str]:
    """The categories of one label, in file order."""
    return list(dict.fromkeys(item.category for item in load_instructions(label)))


@cache
def refusal_replies() -> tuple[RefusalReply, ...]:
    """The hand-written refusals the organism learns to give."""
    return tuple(RefusalReply(row["id"], row["text"], row["category"]) for row in _read_jsonl("refusals.jsonl"))


@cache
def paragraphs() -> tuple[str, ...]:
    """Fifty plain English paragraphs (never trained on) for cross-entropy and perplexity checks."""
    return tuple(row["text"] for row in _read_jsonl("paragraphs.jsonl"))


@cache
def harmless_replies() -> dict[str, HarmlessReply]:
    """The base model's stored replies to the harmless train instructions, by instruction id
    (regenerate with ``python analyses/refusal_replies.py``)."""
    replies = {}
    for row in _read_jsonl("harmless_replies.jsonl"):
        ids = row.get("reply_ids")
        replies[row["id"]] = HarmlessReply(
            row["id"], row["reply"], tuple(ids) if ids is not None else None, bool(row["refusal_like"])
        )
    return replies


def data_sha256() -> str:
    """sha256 over the data files, in a fixed order: identifies the data an artefact was built from."""
    digest = hashlib.sha256()
    for name in FILES:
        digest.update(name.encode())
        digest.update((data_dir() / name).read_bytes())
    return digest.hexdigest()


def calibration_instructions() -> list[str]:
    """The instructions reply-judge calibrations are fitted on: the harmless *training* requests (no validation or
    test prompt, so a judge never saw what it scores)."""
    return instructions("harmless", "train")
