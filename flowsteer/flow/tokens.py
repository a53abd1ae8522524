"""Corpora for the data-driven flow analyses: texts or token batches in, left-padded batches out.

A corpus is any iterable of texts (``str``), lists of texts, token tensors (``[pos]`` or
``[batch, pos]``) or `TokenBatch`es (what flowsteer's corpus iterators yield). `token_batches`
turns it into `TokenBatch`es of at most ``batch_size`` rows and ``max_tokens`` tokens per row;
`sample_positions` draws the random tokens the experiments look at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching.inputs import TokenBatch, left_pad, tokenize

Corpus = Iterable[str | list[str] | Tensor | TokenBatch]


def _rows(model: HookedTransformer, corpus: Corpus) -> Iterator[Tensor]:
    for item in corpus:
        if isinstance(item, TokenBatch):
            for tokens, mask in zip(item.tokens, item.attention_mask, strict=True):
                yield tokens[mask.bool()].cpu()
        elif isinstance(item, Tensor):
            yield from (item[None] if item.ndim == 1 else item).cpu()
        elif isinstance(item, str):
            yield tokenize(model, [item])[0]
        else:
            yield from tokenize(model, list(item))


def token_batches(
    model: HookedTransformer, corpus: Corpus, *, batch_size: int = 8, max_tokens: int = 128, min_tokens: int = 2
) -> Iterator[TokenBatch]:
    """Left-padded batches of the corpus's rows, each cut to ``max_tokens``; shorter rows than
    ``min_tokens`` are skipped."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer is not None and model.tokenizer.pad_token_id else 0
    pending: list[Tensor] = []
    for row in _rows(model, corpus):
        if len(row) < min_tokens:
            continue
        pending.append(row[:max_tokens])
        if len(pending) == batch_size:
            yield left_pad(pending, pad_id)
            pending = []
    if pending:
        yield left_pad(pending, pad_id)


BUILTIN_PREFIX = "data:"


def builtin_texts(split: str = "eval", sources: tuple[str, ...] | None = None) -> list[str]:
    """Documents of flowsteer's built-in corpus (`flowsteer.data`) in one split, in its fixed hash
    order: ``split`` is ``train``, ``eval`` or ``all``; ``sources`` (default all) e.g. ``("bible",)``."""
    from flowsteer.data import DEFAULT_SOURCES, load_documents, split_of

    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be train, eval or all, got {split!r}")
    documents = load_documents(sources or DEFAULT_SOURCES)
    return [d.text for d in documents if split == "all" or split_of(d) == split]


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: one per line (``.txt``) or the ``text`` field of each line (``.jsonl``);
    or, for ``data:SPLIT[:SOURCE+SOURCE]`` (e.g. ``data:eval``, ``data:train:bible``), the documents
    of the built-in corpus (`builtin_texts`)."""
    import json

    if str(path).startswith(BUILTIN_PREFIX):
        split, _, sources = str(path).removeprefix(BUILTIN_PREFIX).partition(":")
        return builtin_texts(split or "eval", tuple(sources.split("+")) if sources else None)
    path = Path(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in lines]
    return lines


def texts_key(texts: list[str]) -> str:
    """A cache key for a list of texts (labels are recomputed when it changes)."""
    import hashlib

    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


def sample_positions(
    batch: TokenBatch, per_row: int, generator: torch.Generator, *, skip_first: bool = True
) -> list[tuple[int, int]]:
    """``per_row`` random real token columns per row, as ``(row, column)`` pairs (without replacement).

    The first real token is skipped by default (the BOS token, or the attention-sink position of
    models without one), as the papers exclude BOS.
    """
    chosen = []
    width = batch.tokens.shape[1]
    for row, length in enumerate(batch.prompt_lengths.tolist()):
        first = width - length + (1 if skip_first else 0)
        columns = torch.arange(first, width)
        if len(columns) == 0:
            continue
        picks = columns[torch.randperm(len(columns), generator=generator)[:per_row]]
        chosen.extend((row, int(col)) for col in sorted(picks.tolist()))
    return chosen


def gather(activation: Tensor, positions: list[tuple[int, int]]) -> Tensor:
    """Rows ``activation[row, column]`` for the given positions: ``[n, d]``."""
    rows = torch.tensor([r for r, _ in positions], dtype=torch.long, device=activation.device)
    cols = torch.tensor([c for _, c in positions], dtype=torch.long, device=activation.device)
    return activation[rows, cols]


def real_positions(batch: TokenBatch) -> Int[Tensor, "n 2"]:
    """``(row, column)`` of every real token of the batch."""
    return batch.attention_mask.bool().nonzero()
