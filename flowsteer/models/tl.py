"""The one seam between flowsteer and TransformerLens 3.x beyond ``HookedTransformer``'s type: where a site's hook
point is, the forward pass in pieces (start / stop at a layer, a key-value cache), the model's tail (final norm,
unembedding, logit soft-cap) and the unembedding weights the logit lens reads.

Everything outside `flowsteer.models` calls these instead of touching TransformerLens internals (the architecture
tests check it), so a port to another backend (TransformerLens 4's ``TransformerBridge``: see
docs/transformer-lens-4.md) rewrites this module, `decode`, `fastpath` and `loading`, not the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.utilities.activation_functions import apply_softcap

from flowsteer.sites import Site


def hook_name(site: Site) -> str:
    """The name of the hook point ``site`` is read and edited at (``blocks.12.hook_resid_post`` for ``12/res``)."""
    return site.hook_name


def has_site(model: HookedTransformer, site: Site) -> bool:
    """Whether ``model`` has a hook point for ``site``."""
    return hook_name(site) in model.hook_dict


def forward(
    model: HookedTransformer,
    inputs: Tensor,
    attention_mask: Tensor | None,
    *,
    start_at_layer: int | None = None,
    stop_at_layer: int | None = None,
    kv_cache: TransformerLensKeyValueCache | None = None,
) -> Tensor:
    """One forward pass: logits, or the residual stream leaving block ``stop_at_layer - 1``. ``inputs`` are token
    ids, or the residual stream entering block ``start_at_layer``; ``kv_cache`` (from `new_kv_cache`) is read and
    extended."""
    return model(inputs, attention_mask=attention_mask, start_at_layer=start_at_layer, stop_at_layer=stop_at_layer,
                 past_kv_cache=kv_cache)


def new_kv_cache(model: HookedTransformer, batch_size: int) -> TransformerLensKeyValueCache:
    """An empty key-value cache for ``batch_size`` sequences (`decode` turns it into the fast path's cache)."""
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size)


def unembed(model: HookedTransformer, residual: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """The tail of the forward pass on a residual stream: final norm, unembedding, logit soft-cap."""
    if model.cfg.normalization_type is not None:
        residual = model.ln_final(residual)
    return apply_softcap(model.unembed(residual), model.cfg.output_logits_soft_cap)


@dataclass(frozen=True)
class Unembedding:
    """What the logit lens needs of the model's tail: ``W_U`` [d_model, d_vocab], the final norm's gain (None
    without one) and whether the norm centres (LayerNorm). float32, detached."""

    W_U: Float[Tensor, "d_model d_vocab"]
    gain: Float[Tensor, " d_model"] | None
    centres: bool


@torch.no_grad()
def unembedding(model: HookedTransformer) -> Unembedding:
    """`Unembedding` of ``model``."""
    gain = getattr(getattr(model, "ln_final", None), "w", None)
    return Unembedding(
        model.W_U.detach().float(),
        None if gain is None else gain.detach().float(),
        model.cfg.normalization_type in ("LN", "LNPre"),
    )
