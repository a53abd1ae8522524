"""A faster decoding step for TransformerLens attention, with every hook point kept.

Stock TransformerLens 3.9 decodes one token by concatenating the whole key/value cache, rotating
*every* cached key again, repeating grouped K/V heads to the full head count, and copying permuted
tensors into matmuls: work that grows with the context at every step. `DecodeCache` instead keeps
already-rotated keys and values in preallocated head-major buffers, and the decode step multiplies
queries against the grouped heads directly.

Hook points fire as in stock TransformerLens, with the same shapes and values: ``hook_q/k/v`` on
the new token, ``hook_rot_q`` on its rotated query, ``hook_rot_k`` on all rotated keys (a copy, when
a hook is attached, so hooks cannot corrupt the cache), ``hook_attn_scores``, ``hook_pattern`` and
``hook_z``. The prompt pass runs the stock forward; only single-token steps take this path. Grouped
matmuls sum in a different order than repeated heads, so logits can differ from stock in the last
float bits (greedy tokens match; see tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.components import AbstractAttention
from transformer_lens.utilities.activation_functions import apply_softcap


@dataclass
class DecodeCacheEntry:
    """One layer's rotated keys and values, ``[batch, kv_head, capacity, d_head]``, first ``length`` used."""

    keys: Tensor
    values: Tensor
    length: int
    frozen: bool = False

    @property
    def past_keys(self) -> Float[Tensor, "batch pos kv_head d_head"]:
        return self.keys[:, :, : self.length].transpose(1, 2)

    def write(self, keys: Tensor, values: Tensor) -> None:
        """Append ``[batch, new, kv_head, d_head]`` keys and values."""
        end = self.length + keys.shape[1]
        if end > self.keys.shape[2]:
            raise RuntimeError(f"decode cache is full ({self.keys.shape[2]} positions)")
        self.keys[:, :, self.length : end] = keys.transpose(1, 2)
        self.values[:, :, self.length : end] = values.transpose(1, 2)
        self.length = end


@dataclass
class DecodeCache:
    """Drop-in for `TransformerLensKeyValueCache` during single-token decoding."""

    entries: list[DecodeCacheEntry]
    previous_attention_mask: Int[Tensor, "batch pos"]
    frozen: bool = False

    def __getitem__(self, layer: int) -> DecodeCacheEntry:
        return self.entries[layer]

    def append_attention_mask(self, attention_mask: Int[Tensor, "batch new"]) -> Int[Tensor, "batch pos"]:
        mask = torch.cat([self.previous_attention_mask, attention_mask.to(self.previous_attention_mask)], -1)
        self.previous_attention_mask = mask
        return mask

    @classmethod
    def from_prompt(
        cls, model: HookedTransformer, cache: TransformerLensKeyValueCache, extra: int
    ) -> DecodeCache:
        """Convert a stock cache filled by the prompt pass, with room for ``extra`` more tokens."""
        mask = cache.previous_attention_mask
        entries = []
        for block, entry in zip(model.blocks, cache.entries, strict=True):
            keys, values = entry.past_keys, entry.past_values
            if block.attn.cfg.positional_embedding_type == "rotary":
                keys = _rotate(block.attn, keys, _position_ids(mask, 0))
            batch, length, heads, d_head = keys.shape
            shape = (batch, heads, length + extra, d_head)
            new = DecodeCacheEntry(keys.new_empty(shape), values.new_empty(shape), 0)
            new.write(keys, values)
            entries.append(new)
        return cls(entries, mask)


def supports_fast_decode(model: HookedTransformer) -> bool:
    """Whether this model's attention is the plain causal kind the fast step implements."""
    cfg = model.cfg
    return (
        cfg.positional_embedding_type in ("rotary", "standard")
        and cfg.attention_dir == "causal"
        and not (cfg.use_attn_result or cfg.use_split_qkv_input or cfg.use_attn_in or cfg.load_in_4bit)
        and not (cfg.use_local_attn or cfg.use_attention_sinks or cfg.use_logn_attn or cfg.use_dynamic_ntk_rope)
        and cfg.clip_qkv is None
        and cfg.original_architecture not in ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")
        and all(isinstance(block.attn, AbstractAttention) for block in model.blocks)
    )


def install_fast_decode(model: HookedTransformer) -> HookedTransformer:
    """Route attention calls that receive a `DecodeCacheEntry` through the fast step (others: stock)."""
    if supports_fast_decode(model):
        for block in model.blocks:
            if "forward" not in block.attn.__dict__:
                block.attn.forward = _attention_forward.__get__(block.attn)
    return model


def uses_fast_decode(model: HookedTransformer) -> bool:
    """Whether `install_fast_decode` is in effect on ``model``."""
    return all("forward" in block.attn.__dict__ for block in model.blocks)


def _position_ids(attention_mask: Tensor, offset: int) -> Tensor:
    """Position of each column among real tokens (0 for padding), as TransformerLens computes it."""
    positions = attention_mask.cumsum(-1) - 1
    return positions.masked_fill(positions < 0, 0)[:, offset:]


def _rotate(attn: AbstractAttention, x: Tensor, positions: Tensor) -> Tensor:
    """TransformerLens's masked rotary embedding of ``x [batch, pos, head, d_head]`` at ``positions``."""
    dim = attn.cfg.rotary_dim
    x_rot, x_pass = x[..., :dim], x[..., dim:]
    end = int(positions.max()) + 1
    if end > attn.rotary_cos.shape[0]:
        attn._extend_rotary_embeddings(min(attn.cfg.n_ctx, max(end, 2 * attn.rotary_cos.shape[0])))
    cos = attn.rotary_cos[positions, None, :]
    sin = attn.rotary_sin[positions, None, :]
    return torch.cat([x_rot * cos + attn.rotate_every_two(x_rot) * sin, x_pass], dim=-1)


def _attention_forward(
    self: AbstractAttention,
    query_input: Tensor,
    key_input: Tensor,
    value_input: Tensor,
    past_kv_cache_entry=None,
    additive_attention_mask: Tensor | None = None,
    attention_mask: Tensor | None = None,
    position_bias: Tensor | None = None,
) -> Tensor:
    if not isinstance(past_kv_cache_entry, DecodeCacheEntry):
        return type(self).forward(
            self,
            query_input,
            key_input,
            value_input,
            past_kv_cache_entry,
            additive_attention_mask,
            attention_mask,
            position_bias,
        )
    if query_input.shape[1] != 1 or attention_mask is None or additive_attention_mask is not None:
        raise ValueError("the fast decode step takes one new token per sequence and an attention mask")
    return _decode_step(self, query_input, key_input, value_input, past_kv_cache_entry, attention_mask)


def _decode_step(
    self: AbstractAttention,
    query_input: Tensor,
    key_input: Tensor,
    value_input: Tensor,
    entry: DecodeCacheEntry,
    attention_mask: Int[Tensor, "batch ctx"],
) -> Float[Tensor, "batch 1 d_model"]:
    q, k, v = self.calculate_qkv_matrices(query_input, key_input, value_input)
    if self.cfg.positional_embedding_type == "rotary":
        positions = _position_ids(attention_mask, entry.length)
        q = self.hook_rot_q(_rotate(self, q, positions))
        k = _rotate(self, k, positions)
    entry.write(k, v)
    batch, _, n_heads, d_head = q.shape
    kv_heads = entry.keys.shape[1]
    group = n_heads // kv_heads
    keys = entry.keys[:, :, : entry.length]
    values = entry.values[:, :, : entry.length]
    if self.cfg.positional_embedding_type == "rotary" and self.hook_rot_k._forward_hooks:
        keys = self.hook_rot_k(keys.transpose(1, 2).clone()).transpose(1, 2)
    # [batch, kv_head, group, d_head] @ [batch, kv_head, d_head, ctx]: query head h reads kv head h // group.
    scores = q.reshape(batch, kv_heads, group, d_head) @ keys.transpose(-1, -2) / self.attn_scale
    scores = apply_softcap(scores, self.cfg.attn_scores_soft_cap).reshape(batch, n_heads, 1, -1)
    scores = torch.where(attention_mask.bool()[:, None, None, :], scores, self.IGNORE.to(scores.device))
    scores = self.hook_attn_scores(scores)
    pattern = F.softmax(scores, dim=-1)
    pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
    pattern = pattern.to(values.dtype).reshape(batch, kv_heads, group, -1)
    z = self.hook_z((pattern @ values).reshape(batch, 1, n_heads, d_head))
    w_out = self.W_O.permute(2, 0, 1).reshape(self.cfg.d_model, n_heads * d_head)
    return F.linear(z.reshape(batch, 1, n_heads * d_head).to(w_out.dtype), w_out, self.b_O)
