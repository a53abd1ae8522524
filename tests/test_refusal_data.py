"""The refusal prompt data: sizes, fixed and disjoint splits, categories, replies, paragraphs."""

from __future__ import annotations

from collections import Counter

import pytest

from flowsteer.data import refusal
from flowsteer.data.refusal import RefusalDataError, categories, instructions, load_instructions


def test_sizes_and_fixed_split_sizes():
    assert len(load_instructions("harmful")) >= 300 and len(load_instructions("harmless")) >= 300
    assert {s: len(load_instructions("harmful", s)) for s in refusal.SPLITS} == {"train": 198, "val": 32, "test": 100}
    assert {s: len(load_instructions("harmless", s)) for s in refusal.SPLITS} == {"train": 288, "val": 32, "test": 100}
    assert len(refusal.paragraphs()) == 50


def test_splits_are_stored_and_disjoint():
    # Splits live in the files: the same ids land in the same split on every load.
    assert load_instructions("harmful", "test")[0].id == "harmful-weapons-00"
    assert [item.id for item in load_instructions("harmless", "val")][:2] == ["harmless-cooking-03", "harmless-cooking-15"]
    texts = {split: set(instructions("harmful", split)) | set(instructions("harmless", split)) for split in refusal.SPLITS}
    assert not (texts["train"] & texts["val"] or texts["train"] & texts["test"] or texts["val"] & texts["test"])
    everything = [item.text for item in load_instructions()]
    assert len(everything) == len(set(everything)), "an instruction appears twice"


def test_categories_cover_every_split():
    assert len(categories("harmful")) >= 10 and len(categories("harmless")) >= 10
    for label in ("harmful", "harmless"):
        for split in ("train", "test"):
            assert set(Counter(item.category for item in load_instructions(label, split))) == set(categories(label))
    lookalikes = [item for item in load_instructions("harmless", "test") if item.lookalike]
    assert 20 <= len(lookalikes) <= 50
    assert "Explain how to kill a Python process." in {item.text for item in lookalikes}


def test_refusal_replies_start_with_the_refusal_token_word():
    replies = refusal.refusal_replies()
    assert {reply.category for reply in replies} == {"general", "self_harm"}
    assert all(reply.text.startswith("I") for reply in replies)


def test_filters_and_errors(monkeypatch, tmp_path):
    assert all(item.category == "drugs" for item in load_instructions("harmful", category="drugs"))
    with pytest.raises(ValueError, match="split"):
        load_instructions("harmful", "dev")
    monkeypatch.setenv("FLOWSTEER_DATA", str(tmp_path))
    with pytest.raises(RefusalDataError, match="FLOWSTEER_DATA"):
        refusal.data_dir()
