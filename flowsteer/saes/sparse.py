"""Sparse TopK SAE arithmetic: only the k active latents of each token are ever touched.

A TopK SAE's dense implementation multiplies a ``[batch, d_sae]`` activation matrix that is almost all
zeros by the decoder, and its backward pass does two more dense ``d_sae``-wide products. Here the
decoder forward is a weighted gather of k decoder rows per token (``embedding_bag``), and every
gradient is a gather or a segment sum over the ``batch x k`` active entries:

* ``encode_at``: the encoder pre-activations at given latent indices (exact float32, sampled
  matrix product); backward scatters into the encoder rows of the active latents only.
* ``decode``: ``sum_k value[b, k] * W_dec[index[b, k]]``; backward gives the value gradients by a
  sampled product and the decoder-row gradients by a segment sum.

Gradients equal those of the dense formulation (tested against sae-lens's `TopKTrainingSAE`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


def _sorted_bags(index: Int[Tensor, "b k"], n_latents: int) -> tuple[Tensor, Tensor, Tensor]:
    """Regroup the ``b x k`` active entries by latent: (entry order, token of each entry, bag offsets)."""
    flat = index.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=n_latents)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    return order, order // index.shape[1], offsets


def _segment_sum(
    index: Int[Tensor, "b k"], weights: Float[Tensor, "b k"], rows: Float[Tensor, "b d"], n_latents: int
) -> Float[Tensor, "n d"]:
    """``out[j] = sum over (b, k) with index[b, k] == j of weights[b, k] * rows[b]``."""
    order, tokens, offsets = _sorted_bags(index, n_latents)
    per_entry = weights.reshape(-1)[order].to(rows.dtype)
    return F.embedding_bag(tokens, rows, offsets, per_sample_weights=per_entry, mode="sum")


def _pattern(index: Int[Tensor, "b k"], n_cols: int, dtype: torch.dtype) -> Tensor:
    rows, k = index.shape
    crow = torch.arange(0, rows * k + 1, k, device=index.device)
    values = torch.zeros(rows * k, dtype=dtype, device=index.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, index.reshape(-1), values, (rows, n_cols))


def sampled_rows_dot(
    left: Float[Tensor, "b d"], right_rows: Float[Tensor, "n d"], index: Int[Tensor, "b k"]
) -> Float[Tensor, "b k"]:
    """``out[b, k] = left[b] . right_rows[index[b, k]]`` without forming ``left @ right_rows.T``.

    ``index`` must be sorted along each row (``sort_index`` does it).
    """
    if left.device.type in ("cpu", "cuda"):
        product = torch.sparse.sampled_addmm(_pattern(index, right_rows.shape[0], left.dtype), left, right_rows.T)
        return product.values().view(index.shape)
    return torch.einsum("bkd,bd->bk", right_rows[index], left)


def sort_index(index: Int[Tensor, "b k"]) -> Int[Tensor, "b k"]:
    """Latent indices sorted within each token (the layout `sampled_rows_dot` needs)."""
    return index.sort(dim=-1).values


class EncodeAt(torch.autograd.Function):
    """``pre[b, k] = x[b] . W_enc_t[index[b, k]] + b_enc[index[b, k]]`` with sparse gradients.

    ``W_enc_t`` is the encoder stored as ``[d_sae, d_in]`` rows (sae-lens's ``W_enc`` transposed).
    """

    @staticmethod
    def forward(x: Tensor, W_enc_t: Tensor, b_enc: Tensor, index: Tensor) -> Tensor:
        return sampled_rows_dot(x, W_enc_t, index) + b_enc[index]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, W_enc_t, _, index = inputs
        ctx.save_for_backward(x, W_enc_t, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, W_enc_t, index = ctx.saved_tensors
        n_latents = W_enc_t.shape[0]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(index, W_enc_t, per_sample_weights=grad.to(W_enc_t.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            grad_w = _segment_sum(index, grad, x, n_latents)
        if ctx.needs_input_grad[2]:
            grad_b = torch.zeros(n_latents, dtype=grad.dtype, device=grad.device)
            grad_b.index_add_(0, index.reshape(-1), grad.reshape(-1))
        return grad_x, grad_w, grad_b, None


class Decode(torch.autograd.Function):
    """``out[b] = sum_k values[b, k] * W_dec[index[b, k]]`` with sparse gradients (no bias)."""

    @staticmethod
    def forward(values: Tensor, W_dec: Tensor, index: Tensor) -> Tensor:
        return F.embedding_bag(index, W_dec, per_sample_weights=values.to(W_dec.dtype), mode="sum")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        values, W_dec, index = inputs
        ctx.save_for_backward(values, W_dec, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        values, W_dec, index = ctx.saved_tensors
        grad_values = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_values = sampled_rows_dot(grad, W_dec, index)
        if ctx.needs_input_grad[1]:
            grad_w = _segment_sum(index, values, grad, W_dec.shape[0])
        return grad_values, grad_w, None


def encode_at(
    x: Float[Tensor, "b d"], W_enc_t: Float[Tensor, "n d"], b_enc: Float[Tensor, " n"], index: Int[Tensor, "b k"]
) -> Float[Tensor, "b k"]:
    """Encoder pre-activations of the latents in ``index`` (sorted per row)."""
    return EncodeAt.apply(x, W_enc_t, b_enc, index)


def decode(
    values: Float[Tensor, "b k"], W_dec: Float[Tensor, "n d"], index: Int[Tensor, "b k"]
) -> Float[Tensor, "b d"]:
    """``sum_k values[b, k] * W_dec[index[b, k]]`` (``index`` sorted per row)."""
    return Decode.apply(values, W_dec, index)
