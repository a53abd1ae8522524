"""The training corpus as token ids: deduplicated documents, a train/eval split by document hash,
EOS-separated token streams cut into fixed-length chunks, cached per tokenizer.

* **Split.** A document goes to ``eval`` when the first 8 hex digits of the SHA-256 of its
  whitespace-normalised text, read as an integer, fall below ``eval_fraction`` of 16^8; otherwise
  to ``train``. Adding or removing other documents never moves a document between splits.
* **Order.** Within a split, documents are ordered by that same hash (a fixed pseudo-random order,
  so neighbouring chunks mix sources), tokenised without special tokens and joined with the EOS
  token after each document.
* **Chunks.** The stream is cut left to right into rows of ``context`` tokens (the remainder is
  dropped). Position 0 of each row is the attention sink; `flowsteer.saes` trains on positions 1+.
* **Cache.** Token streams are stored as safetensors under ``cache_dir("corpus")``, keyed by the
  tokenizer, the sources, the split fraction and the Python version (pydoc text depends on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from safetensors.torch import save_file
from torch import Tensor

from flowsteer.data.sources import SOURCES, Document
from flowsteer.paths import atomic_path, cache_dir, read_json, read_safetensors, write_json

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_SOURCES: tuple[str, ...] = ("bible", "fortunes", "pydoc")
DEFAULT_EVAL_FRACTION = 0.02
_SPACE = re.compile(r"\s+")


def document_hash(document: Document) -> str:
    """SHA-256 of the whitespace-normalised text (the split key and the deduplication key)."""
    return hashlib.sha256(_SPACE.sub(" ", document.text).strip().encode()).hexdigest()


def split_of(document: Document, eval_fraction: float = DEFAULT_EVAL_FRACTION) -> str:
    """``"eval"`` or ``"train"``, fixed by the document's hash."""
    return "eval" if int(document_hash(document)[:8], 16) < eval_fraction * 16**8 else "train"


def load_documents(sources: Sequence[str] = DEFAULT_SOURCES) -> list[Document]:
    """Every document of ``sources``, deduplicated by text, in hash order."""
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; available: {', '.join(SOURCES)}")
    by_hash: dict[str, Document] = {}
    for source in sources:
        for document in SOURCES[source]():
            by_hash.setdefault(document_hash(document), document)
    return [by_hash[key] for key in sorted(by_hash)]


@dataclass(frozen=True)
class CorpusTokens:
    """The token streams of one corpus for one tokenizer."""

    train: Int[Tensor, " n"]
    eval: Int[Tensor, " m"]
    stats: dict

    def split(self, name: str) -> Int[Tensor, " n"]:
        if name not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {name!r}")
        return self.train if name == "train" else self.eval


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A short hash identifying a tokenizer's full definition (vocabulary, merges, normaliser)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def _tokenize(tokenizer: PreTrainedTokenizerBase, documents: list[Document], eos: int) -> tuple[Tensor, dict[str, int]]:
    ids = tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
    per_source: dict[str, int] = {}
    stream: list[int] = []
    for document, row in zip(documents, ids, strict=True):
        stream.extend(row)
        stream.append(eos)
        per_source[document.source] = per_source.get(document.source, 0) + len(row) + 1
    return torch.tensor(stream, dtype=torch.int32), per_source


def corpus_tokens(
    tokenizer: PreTrainedTokenizerBase,
    sources: Sequence[str] = DEFAULT_SOURCES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> CorpusTokens:
    """The train and eval token streams of ``sources`` for ``tokenizer`` (built once, then cached).

    Args:
        tokenizer: a Hugging Face tokenizer with an EOS token (``model.tokenizer``).
        sources: names from `flowsteer.data.SOURCES`.
        eval_fraction: share of documents (by hash) held out for evaluation.
    """
    if tokenizer is None or tokenizer.eos_token_id is None:
        raise ValueError("the corpus needs a tokenizer with an EOS token to separate documents")
    sources = tuple(sources)
    key = hashlib.sha256(
        json.dumps([tokenizer_fingerprint(tokenizer), sources, eval_fraction, sys.version_info[:2]]).encode()
    ).hexdigest()[:16]
    folder = cache_dir("corpus")
    path, meta_path = folder / f"{key}.safetensors", folder / f"{key}.json"
    if path.is_file() and meta_path.is_file():
        fix = f"delete it and {meta_path.name}: the corpus is then tokenised again"
        tensors = read_safetensors(path, fix)
        return CorpusTokens(tensors["train"], tensors["eval"], read_json(meta_path, fix))
    log.info("tokenising the corpus %s (once; cached in %s)", "+".join(sources), folder)
    documents = load_documents(sources)
    splits = {name: [d for d in documents if split_of(d, eval_fraction) == name] for name in ("train", "eval")}
    tensors, stats = {}, {"sources": list(sources), "eval_fraction": eval_fraction, "splits": {}}
    for name, docs in splits.items():
        tensors[name], per_source = _tokenize(tokenizer, docs, tokenizer.eos_token_id)
        stats["splits"][name] = {
            "documents": len(docs),
            "characters": sum(len(d.text) for d in docs),
            "tokens": int(tensors[name].numel()),
            "tokens_by_source": per_source,
        }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp)
    write_json(meta_path, stats)
    return CorpusTokens(tensors["train"], tensors["eval"], stats)


def chunk(tokens: Int[Tensor, " n"], context: int) -> Int[Tensor, "rows context"]:
    """Cut a token stream left to right into rows of ``context`` tokens (the remainder is dropped)."""
    if context < 2:
        raise ValueError(f"context must be at least 2 tokens, got {context}")
    rows = tokens.numel() // context
    if rows == 0:
        raise ValueError(f"a stream of {tokens.numel()} tokens holds no chunk of {context} tokens")
    return tokens[: rows * context].view(rows, context).long()


def token_chunks(
    tokenizer: PreTrainedTokenizerBase,
    split: str = "train",
    context: int = 128,
    sources: Sequence[str] = DEFAULT_SOURCES,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
) -> Int[Tensor, "rows context"]:
    """Fixed-length token chunks of one split of the corpus (see the module docstring)."""
    return chunk(corpus_tokens(tokenizer, sources, eval_fraction).split(split), context)
