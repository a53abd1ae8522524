"""Streaming, shuffled activations at many sites from one forward pass per token batch.

Training data comes in *rounds*. Round ``r`` takes the next ``chunks_per_round`` token chunks of a
seeded permutation of all chunks (a fresh permutation each epoch), runs them through the model in
batches of ``lm_batch`` chunks with `flowsteer.patching.cache_sites` (which stops after the deepest
site's layer), keeps positions ``skip_positions..`` (position 0 is the attention sink, with a norm
far above the rest) and draws a shuffled token order from a generator seeded by ``(seed, r)``. Every site
sees the same tokens in the same order.

Attention sinks after position 0 are left out of the order (`sink_tokens`): tokens whose
residual-stream norm exceeds ``max_norm_ratio`` times that layer's median at a residual site of the set
or after the deepest site's block (computed by the forward pass anyway). In SmolLM2-135M about 1% of
128-token chunks carry a second sink at position 1 (e.g. when it repeats position 0's token): it forms
at layer 11 (1.6x the median norm at layer 10, 200x at layer 11) and fades (8x at layer 29). In 300k training
tokens at 12/res, 21 such tokens held 73% of the variance; left in, each dominates the loss of the batch
it lands in. Ordinary tokens stay below 14x at every residual layer (early layers have the heaviest
tail), so the default ratio of 20 separates the two; MLP and attention outputs are not used for the test
because their ordinary tails reach 46x.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.patching import cache_sites
from flowsteer.sites import Site


def _generator(*seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(hashlib.sha256(repr(seed).encode()).hexdigest()[:15], 16))
    return generator


class ActivationRounds:
    """Rounds of activations: ``rounds[r]`` is ``(activations [sites, tokens, d], order [tokens])``;
    reading ``activations[:, order]`` in slices gives the shuffled stream without a second copy.

    Args:
        chunks: token chunks ``[rows, context]`` (e.g. `flowsteer.data.token_chunks`).
        round_tokens: activations per site in one round (the shuffle window and the memory bound).
        lm_batch: chunks per forward pass.
        skip_positions: leading positions of each chunk left out (1 drops the attention sink).
        autocast_dtype: run the model's forward pass under ``torch.autocast`` in this dtype (None: as is);
            the activations are stored in float32.
        max_norm_ratio: leave out tokens whose residual-stream norm exceeds this multiple of the
            layer's median in the round (`sink_tokens`; None keeps every token).
    """

    def __init__(
        self,
        model: HookedTransformer,
        sites: Sequence[Site],
        chunks: Int[Tensor, "rows context"],
        *,
        round_tokens: int,
        lm_batch: int = 32,
        seed: int = 0,
        skip_positions: int = 1,
        autocast_dtype: torch.dtype | None = None,
        max_norm_ratio: float | None = 20.0,
    ):
        if chunks.ndim != 2 or chunks.shape[1] <= skip_positions:
            raise ValueError(f"chunks must be [rows, context > {skip_positions}], got {tuple(chunks.shape)}")
        self.model, self.sites, self.chunks = model, list(sites), chunks
        self.lm_batch, self.seed, self.skip = lm_batch, seed, skip_positions
        self.autocast_dtype = autocast_dtype
        self.max_norm_ratio = max_norm_ratio
        self.detectors = sink_detector_sites(self.sites) if max_norm_ratio is not None else []
        self.tokens_per_chunk = chunks.shape[1] - skip_positions
        self.chunks_per_round = max(1, math.ceil(round_tokens / self.tokens_per_chunk))
        self._permutations: dict[int, Tensor] = {}

    @property
    def tokens_per_round(self) -> int:
        return self.chunks_per_round * self.tokens_per_chunk

    def chunk_rows(self, round_index: int) -> Int[Tensor, " n"]:
        """Which chunks round ``round_index`` uses (epochs continue with a new permutation)."""
        n_rows = self.chunks.shape[0]
        start = round_index * self.chunks_per_round
        positions = torch.arange(start, start + self.chunks_per_round)
        rows = torch.empty_like(positions)
        for epoch in positions.div(n_rows, rounding_mode="floor").unique().tolist():
            if epoch not in self._permutations:
                self._permutations = {epoch: torch.randperm(n_rows, generator=_generator(self.seed, epoch))}
            mask = positions // n_rows == epoch
            rows[mask] = self._permutations[epoch][positions[mask] % n_rows]
        return rows

    def _autocast(self, device: torch.device | str) -> torch.autocast:
        dtype = self.autocast_dtype or torch.float32
        return torch.autocast(torch.device(device).type, dtype=dtype, enabled=self.autocast_dtype is not None)

    def __getitem__(self, round_index: int) -> tuple[Float[Tensor, "sites tokens d"], Int[Tensor, " tokens"]]:
        return self.harvest(round_index)

    @torch.no_grad()
    def harvest(
        self, round_index: int, on_tokens: Callable[[int], None] | None = None
    ) -> tuple[Float[Tensor, "sites tokens d"], Int[Tensor, " tokens"]]:
        """Round ``round_index`` (``rounds[r]``); ``on_tokens(n)`` is called after each forward pass with the
        number of tokens it harvested (progress bars)."""
        rows = self.chunk_rows(round_index)
        device = self.model.cfg.device
        width = self.model.cfg.d_model
        n_tokens = len(rows) * self.tokens_per_chunk
        out = torch.empty(len(self.sites), n_tokens, width, device=device)
        detector_norms = torch.empty(len(self.detectors), n_tokens, device=device)
        filled = 0
        for tokens in self.chunks[rows].to(device).split(self.lm_batch):
            with self._autocast(device):
                activations = cache_sites(self.model, tokens, {*self.sites, *self.detectors})
            n = tokens.shape[0] * self.tokens_per_chunk
            for i, site in enumerate(self.sites):
                out[i, filled : filled + n] = activations[site][:, self.skip :].reshape(n, width)
            for i, site in enumerate(self.detectors):
                norms = activations[site][:, self.skip :].float().norm(dim=-1)
                detector_norms[i, filled : filled + n] = norms.flatten()
            filled += n
            del activations
            if on_tokens is not None:
                on_tokens(n)
        order = torch.randperm(filled, generator=_generator(self.seed, 1_000_003, round_index)).to(device)
        if self.max_norm_ratio is not None:
            order = order[~sink_tokens(detector_norms, self.max_norm_ratio)[order]]
        return out, order

    def reshuffled(self, order: Int[Tensor, " n"], round_index: int, pass_index: int) -> Int[Tensor, " n"]:
        """``order`` in a fresh seeded order for another pass over round ``round_index`` (pass 0: as is)."""
        return _reshuffled(order, self.seed, round_index, pass_index)


def _reshuffled(order: Tensor, seed: int, round_index: int, pass_index: int) -> Tensor:
    if pass_index == 0:
        return order
    permutation = torch.randperm(order.numel(), generator=_generator(seed, round_index, pass_index))
    return order[permutation.to(order.device)]


class CachedRounds:
    """`ActivationRounds`' interface over activations already in memory (no model, no forward pass).

    ``cached[site]`` holds ``[tokens, d]`` activations (the same tokens, in the same order, at every site).
    An epoch splits them into consecutive windows of ``round_tokens`` (the last one may be shorter);
    round ``r`` is window ``r`` modulo the number of windows, copied into one ``[sites, window, d]`` tensor,
    with a shuffled order drawn exactly as `ActivationRounds` draws it for round ``r``. So rounds cut from
    `ActivationRounds` (``torch.cat`` of ``rounds[r][0]`` along tokens, no sinks left out) and served with
    its ``tokens_per_round`` give the same stream.
    """

    def __init__(self, cached: Sequence[Float[Tensor, "tokens d"]], *, round_tokens: int, seed: int = 0):
        if not cached:
            raise ValueError("CachedRounds needs the activations of at least one site")
        shapes = {tuple(a.shape) for a in cached}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"cached activations must be [tokens, d] with one shape at every site, got {shapes}")
        self.cached, self.seed = list(cached), seed
        self.n_tokens = cached[0].shape[0]
        self.tokens_per_round = min(round_tokens, self.n_tokens)
        self.windows = math.ceil(self.n_tokens / self.tokens_per_round)

    def window(self, round_index: int) -> range:
        """The cached token positions round ``round_index`` uses."""
        start = round_index % self.windows * self.tokens_per_round
        return range(start, min(start + self.tokens_per_round, self.n_tokens))

    def harvest(
        self, round_index: int, on_tokens: Callable[[int], None] | None = None
    ) -> tuple[Float[Tensor, "sites tokens d"], Int[Tensor, " tokens"]]:
        """``rounds[r]`` (nothing is harvested: ``on_tokens`` is never called)."""
        return self[round_index]

    def __getitem__(self, round_index: int) -> tuple[Float[Tensor, "sites tokens d"], Int[Tensor, " tokens"]]:
        window = self.window(round_index)
        activations = torch.stack([a[window.start : window.stop] for a in self.cached])
        order = torch.randperm(len(window), generator=_generator(self.seed, 1_000_003, round_index))
        return activations, order.to(activations.device)

    def reshuffled(self, order: Int[Tensor, " n"], round_index: int, pass_index: int) -> Int[Tensor, " n"]:
        """As `ActivationRounds.reshuffled`."""
        return _reshuffled(order, self.seed, round_index, pass_index)


def sink_detector_sites(sites: Sequence[Site]) -> list[Site]:
    """The residual sites whose norms reveal attention sinks for ``sites``: the residual sites among them
    and the residual stream after the deepest one's block."""
    return sorted({site for site in sites if site.kind == "resid_post"} | {Site(max(site.layer for site in sites))})


def sink_tokens(norms: Float[Tensor, "sites tokens"], max_norm_ratio: float) -> Bool[Tensor, " tokens"]:
    """Tokens whose norm exceeds ``max_norm_ratio`` times its site's median norm, at any site."""
    return (norms > max_norm_ratio * norms.median(dim=1, keepdim=True).values).any(dim=0)
