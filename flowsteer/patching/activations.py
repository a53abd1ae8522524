"""Activations as rows: a site's activation at chosen token positions of many inputs, stacked (what maps, probes
and statistics are fitted on)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching.inputs import TokenBatch
from flowsteer.patching.interventions import Context
from flowsteer.patching.patch import Patch, PositionSpec
from flowsteer.patching.run import cache_sites
from flowsteer.sites import Site

PositionSelector = Callable[[Int[Tensor, "batch pos"], Int[Tensor, " batch"]], Bool[Tensor, "batch pos"]]


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
    acts = cache_sites(model, inputs, [site], batch_size=batch_size)
    mask = position_mask(site, positions, acts.positions, acts.prompt_lengths)
    result = acts[site][mask].float()
    if result.shape[0] == 0:
        raise ValueError(f"no token of the inputs matches positions={positions!r}")
    return result
