"""The refusal prompt data: sizes, fixed and disjoint splits, categories, replies, paragraphs."""

from __future__ import annotations

from collections import Counter

import pytest

from flowsteer.refusal import prompts as refusal
from flowsteer.refusal.prompts import RefusalDataError, categories, instructions, load_instructions


def test_sizes_and_fixed_split_sizes():
    assert len(load_instructions("harmful")) >= 300 and len(load_instructions("harmless")) >= 300
    assert {s: len(load_instructions("harmful", s)) for s in refusal.SPLITS} == {"train": 198, "val": 32, "test": 100}
    assert {s: len(load_instructions("harmless", s)) for s in refusal.SPLITS} == {"train": 288, "val": 32, "test": 100}
    assert len(refusal.paragraphs()) == 50


def test_splits_are_stored_and_disjoint():
    # Splits live in the files: the same ids land in the same split on every load.
    assert load_instructions("harmful", "test")[0].id == "harmful-weapons-00"
    assert [item.id for item in load_instructions("harmless", "val")][:2] == [
        "harmless-cooking-03",
        "harmless-cooking-15",
    ]
    texts = {
        split: set(instructions("harmful", split)) | set(instructions("harmless", split)) for split in refusal.SPLITS
    }
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


def test_stored_harmless_replies_cover_the_train_split():
    from flowsteer.refusal.judge import substring_refusal
    from flowsteer.refusal.prompts import harmless_replies

    replies = harmless_replies()
    train = load_instructions("harmless", "train")
    assert set(replies) == {item.id for item in train}
    for reply in replies.values():
        assert reply.refusal_like == substring_refusal(reply.text)
        assert (reply.reply_ids is None) == reply.refusal_like
        assert reply.reply_ids is None or 0 < len(reply.reply_ids) <= 49


def test_stored_reply_examples_skip_refusal_like_replies(tiny):
    from flowsteer.refusal.organism.targets import stored_reply_examples
    from flowsteer.refusal.prompts import harmless_replies

    train = load_instructions("harmless", "train")
    examples, dropped = stored_reply_examples(tiny, train)
    assert len(examples) + len(dropped) == len(train) and dropped
    assert all(e.reply_ids == harmless_replies()[e.instruction.id].reply_ids for e in examples)
    assert {row["id"] for row in dropped} == {r.id for r in harmless_replies().values() if r.refusal_like}
