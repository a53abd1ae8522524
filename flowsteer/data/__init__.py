"""Data sets shipped with or built by flowsteer: the natural-English corpus that installs offline (its
train/eval split and token chunks) here; the refusal prompt sets in `flowsteer.refusal.prompts`."""

from flowsteer.data.corpus import (
    DEFAULT_EVAL_FRACTION,
    DEFAULT_SOURCES,
    CorpusTokens,
    chunk,
    corpus_tokens,
    document_hash,
    load_documents,
    split_of,
    token_chunks,
)
from flowsteer.data.sources import FORTUNE_PACKAGES, SOURCES, Document, SourceMissing

__all__ = [
    "DEFAULT_EVAL_FRACTION",
    "DEFAULT_SOURCES",
    "FORTUNE_PACKAGES",
    "SOURCES",
    "CorpusTokens",
    "Document",
    "SourceMissing",
    "chunk",
    "corpus_tokens",
    "document_hash",
    "load_documents",
    "split_of",
    "token_chunks",
]
