"""Turning text into left-padded token batches with an explicit attention mask.

`encode` is the one gate every patched run goes through: it also refuses prompts (plus the tokens
a generation will add) that do not fit the model's context window, before any forward pass runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class TokenBatch:
    """Left-padded tokens and their attention mask (1 = real token)."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    def __post_init__(self) -> None:
        if self.tokens.shape != self.attention_mask.shape or self.tokens.ndim != 2:
            raise ValueError(
                f"tokens {tuple(self.tokens.shape)} and attention_mask {tuple(self.attention_mask.shape)} "
                "must both be [batch, pos]"
            )

    @property
    def prompt_lengths(self) -> Int[Tensor, " batch"]:
        return self.attention_mask.sum(-1)

    @property
    def positions(self) -> Int[Tensor, "batch pos"]:
        """Index of each column among its row's real tokens; -1 on padding."""
        return torch.where(self.attention_mask.bool(), self.attention_mask.cumsum(-1) - 1, -1)

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.tokens.to(device), self.attention_mask.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def split(self, size: int | None) -> Iterator[TokenBatch]:
        """Consecutive pieces of at most ``size`` rows (all rows when None), each without the padding columns
        none of its rows needs."""
        if size is None or size >= len(self):
            yield self
            return
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        for start in range(0, len(self), size):
            yield self[start : start + size]

    def __getitem__(self, rows: slice) -> TokenBatch:
        """Rows ``rows``, with padding columns that no remaining row needs removed."""
        tokens, mask = self.tokens[rows], self.attention_mask[rows]
        keep = int(mask.sum(-1).max()) if len(tokens) else 0
        return TokenBatch(tokens[:, tokens.shape[1] - keep :], mask[:, mask.shape[1] - keep :])


Inputs = str | Sequence[str] | Int[Tensor, "batch pos"] | TokenBatch


def left_pad(rows: Sequence[Tensor], pad_id: int, width: int | None = None) -> TokenBatch:
    """Stack 1-D token tensors into a left-padded `TokenBatch` of at least ``width`` columns."""
    if not rows:
        raise ValueError("no inputs: pass at least one prompt")
    width = max(width or 0, max(len(r) for r in rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row) == 0:
            raise ValueError(f"input {i} is empty after tokenisation")
        tokens[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return TokenBatch(tokens, mask)


def tokenize(model: HookedTransformer, texts: Sequence[str]) -> list[Tensor]:
    """Each text tokenised as ``model.to_tokens(text)`` would (BOS rules included), never truncated."""
    if model.tokenizer is None:
        raise ValueError("this model has no tokenizer: pass token ids instead of text")
    return [model.to_tokens(text, move_to_device=False, truncate=False)[0] for text in texts]


def _check_fits(model: HookedTransformer, lengths: Sequence[int], new_tokens: int = 0) -> None:
    """Raise ValueError unless each prompt of ``lengths`` tokens plus ``new_tokens`` fits ``n_ctx``."""
    if not lengths:
        return
    limit, name = model.cfg.n_ctx, model.cfg.model_name
    index = max(range(len(lengths)), key=lengths.__getitem__)
    longest = lengths[index]
    if longest > limit:
        raise ValueError(
            f"prompt {index} is {longest} tokens long but {name} reads at most n_ctx={limit} tokens; "
            f"shorten it or truncate it to at most {limit} tokens"
        )
    over = longest + new_tokens - limit
    if over > 0:
        lower = f"lower max_new_tokens to {limit - longest} or " if longest < limit else ""
        raise ValueError(
            f"prompt {index} ({longest} tokens) plus max_new_tokens={new_tokens} needs {longest + new_tokens} "
            f"positions, {over} more than {name}'s n_ctx={limit}; {lower}shorten the prompt by {over} tokens"
        )


def encode(model: HookedTransformer, inputs: Inputs, width: int | None = None, new_tokens: int = 0) -> TokenBatch:
    """Text, token ids or a `TokenBatch` as a left-padded `TokenBatch` on the model's device.

    Raises ValueError if a prompt plus ``new_tokens`` (the tokens a generation will add) exceeds the
    model's context ``n_ctx``.
    """
    device = model.cfg.device
    if isinstance(inputs, Tensor):
        tokens = inputs[None] if inputs.ndim == 1 else inputs
        inputs = TokenBatch(tokens, torch.ones_like(tokens))
    if isinstance(inputs, TokenBatch):
        if inputs.tokens.shape[1] + new_tokens > model.cfg.n_ctx:  # only then read the rows' lengths
            _check_fits(model, inputs.prompt_lengths.tolist(), new_tokens)
        return inputs.to(device)
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    rows = tokenize(model, texts)
    _check_fits(model, [len(row) for row in rows], new_tokens)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    return left_pad(rows, pad_id, width).to(device)


def encode_pair(model: HookedTransformer, base: Inputs, source: Inputs) -> tuple[TokenBatch, TokenBatch]:
    """Base and source padded to one width, so equal columns sit at equal distance from the end."""
    first, second = encode(model, base), encode(model, source)
    if len(first) != len(second):
        raise ValueError(f"base has {len(first)} inputs and source {len(second)}; pair them one to one")
    width = max(first.tokens.shape[1], second.tokens.shape[1])
    return _widen(first, width, model), _widen(second, width, model)


def _widen(batch: TokenBatch, width: int, model: HookedTransformer) -> TokenBatch:
    extra = width - batch.tokens.shape[1]
    if extra == 0:
        return batch
    pad_id = model.tokenizer.pad_token_id if model.tokenizer is not None else 0
    pad = torch.full((len(batch), extra), pad_id or 0, dtype=batch.tokens.dtype, device=batch.tokens.device)
    zeros = torch.zeros_like(pad)
    return TokenBatch(torch.cat([pad, batch.tokens], 1), torch.cat([zeros, batch.attention_mask], 1))


def pad_left(tensor: Tensor, width: int, dim: int = 1) -> Tensor:
    """``tensor`` with zeros prepended along ``dim`` up to ``width`` (left padding of a batch piece's outputs)."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim)
