"""Activations for fitting maps: rows of a site's activation at chosen token positions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import Context, Patch, TokenBatch, cache_sites, encode
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import Site

PositionSelector = Callable[[Int[Tensor, "batch pos"], Int[Tensor, " batch"]], Bool[Tensor, "batch pos"]]


def chunks(inputs: Sequence[str] | TokenBatch, size: int) -> Iterator[Sequence[str] | TokenBatch]:
    """Consecutive pieces of at most ``size`` prompts (a list of texts or a `TokenBatch`)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(inputs), size):
        yield inputs[start : start + size]


def position_mask(
    site: Site | str,
    positions: PositionSpec | PositionSelector,
    token_positions: Int[Tensor, "batch pos"],
    prompt_lengths: Int[Tensor, " batch"],
) -> Bool[Tensor, "batch pos"]:
    """Real (non-padding) columns selected by a `Patch`-style position spec or a selector function
    ``(positions, prompt_lengths) -> mask``."""
    if callable(positions):
        mask = positions(token_positions, prompt_lengths)
    else:
        context = Context(Site.parse(site), token_positions, prompt_lengths)
        mask = Patch(site, lambda activation, context: activation, positions).mask(context)
    real = token_positions >= 0
    return real if mask is None else mask & real


@torch.no_grad()
def collect_activations(
    model: HookedTransformer,
    inputs: Sequence[str] | TokenBatch,
    site: Site | str,
    positions: PositionSpec | PositionSelector = slice(1, None),
    batch_size: int = 16,
) -> Float[Tensor, "n d"]:
    """The activation at ``site`` of every selected token of every input, stacked as float32 rows.

    ``positions`` is a `Patch` position spec (default ``slice(1, None)``: every real token but the
    first, which is an attention sink with an outsized norm in many models) or a selector function.
    """
    if len(inputs) == 0:
        raise ValueError("collect_activations needs at least one input")
    rows = []
    for chunk in chunks(inputs if isinstance(inputs, TokenBatch) else list(inputs), batch_size):
        batch = encode(model, chunk)
        acts = cache_sites(model, batch, [site])
        mask = position_mask(site, positions, acts.positions, acts.prompt_lengths)
        rows.append(acts[site][mask].float())
    result = torch.cat(rows)
    if result.shape[0] == 0:
        raise ValueError(f"no token of the inputs matches positions={positions!r}")
    return result
