"""The corpus: sources installed offline, deduplication, the hash split, EOS-separated cached token streams."""

from __future__ import annotations

import pytest
import torch

from flowsteer import data
from flowsteer.data import Document, chunk, corpus_tokens, load_documents, split_of
from flowsteer.models.tiny import byte_tokenizer


def test_fortunes_are_deduplicated_and_split_by_hash():
    documents = load_documents(("fortunes",))
    assert len(documents) > 10_000
    assert len({d.text for d in documents}) == len(documents)
    assert not any(d.name.split(":")[0].endswith("-o") for d in documents)  # offensive files skipped
    splits = [split_of(d) for d in documents]
    share = splits.count("eval") / len(splits)
    assert 0.01 < share < 0.03
    assert split_of(Document("x", "renamed", documents[0].text)) == splits[0]  # only the text decides


def test_corpus_tokens_separate_documents_with_eos_and_are_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWSTEER_CACHE", str(tmp_path))
    texts = [f"document number {i} says hello" for i in range(200)]
    calls = []

    def source():
        calls.append(1)
        return iter(Document("toy", str(i), text) for i, text in enumerate(texts))

    monkeypatch.setitem(data.sources.SOURCES, "toy", source)
    tokenizer = byte_tokenizer()
    first = corpus_tokens(tokenizer, ("toy",), eval_fraction=0.2)
    again = corpus_tokens(tokenizer, ("toy",), eval_fraction=0.2)
    assert len(calls) == 1 and torch.equal(first.train, again.train)
    eos = tokenizer.eos_token_id
    n_train, n_eval = first.stats["splits"]["train"]["documents"], first.stats["splits"]["eval"]["documents"]
    assert n_train + n_eval == 200 and n_eval > 0
    assert int((first.train == eos).sum()) == n_train and int(first.train[-1]) == eos
    assert first.stats["splits"]["train"]["tokens"] == first.train.numel()
    with pytest.raises(ValueError, match="unknown corpus source"):
        corpus_tokens(tokenizer, ("nope",))


def test_chunks_cut_left_to_right():
    stream = torch.arange(10, dtype=torch.int32)
    assert chunk(stream, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="no chunk"):
        chunk(stream, 11)

