"""Forward passes with patches: `run_with_patches`, `cache_sites`, `interchange`, `patching_sweep`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.models import tl
from flowsteer.patching.effects import EffectLog
from flowsteer.patching.hooks import HookSession, SiteActivations
from flowsteer.patching.inputs import Inputs, TokenBatch, encode, encode_pair, pad_left
from flowsteer.patching.interventions import Activation, FromSource
from flowsteer.patching.patch import Patch
from flowsteer.sites import Site

Logits = Float[Tensor, "batch pos vocab"]


def _forward(model: HookedTransformer, session: HookSession, batch: TokenBatch, stop_at_layer: int | None):
    session.set_chunk(batch.positions, batch.prompt_lengths)
    with session.attached():
        return tl.forward(model, batch.tokens, batch.attention_mask, stop_at_layer=stop_at_layer)


def _activations(session: HookSession, batch: TokenBatch) -> SiteActivations:
    activations = session.activations()
    activations.positions, activations.prompt_lengths = batch.positions, batch.prompt_lengths
    return activations


def _join_activations(parts: list[SiteActivations], batch: TokenBatch) -> SiteActivations:
    """Activations of consecutive pieces of ``batch``, left-padded back to its width and joined."""
    if len(parts) == 1:
        return parts[0]
    width = batch.tokens.shape[1]
    joined = SiteActivations({site: torch.cat([pad_left(part[site], width) for part in parts]) for site in parts[0]})
    joined.positions, joined.prompt_lengths = batch.positions, batch.prompt_lengths
    return joined


def _last_logits(model: HookedTransformer, session: HookSession, batch: TokenBatch) -> Float[Tensor, "batch vocab"]:
    """Logits at each row's last column only: the unembedding runs on one position, not all of them."""
    residual = _forward(model, session, batch, model.cfg.n_layers)
    return tl.unembed(model, residual[:, -1:])[:, -1]


def run_with_patches(
    model: HookedTransformer,
    inputs: Inputs,
    patches: Sequence[Patch] = (),
    *,
    cache: Iterable[Site | str] | None = None,
    record: EffectLog | None = None,
    batch_size: int | None = None,
    last_position: bool = False,
    reduce: Callable[[Tensor, TokenBatch], Tensor] | None = None,
) -> Tensor | tuple[Tensor, SiteActivations]:
    """Run ``model`` on ``inputs`` with ``patches`` applied; return the logits ``[batch, pos, vocab]``.

    Args:
        inputs: text, a list of texts (left-padded together), token ids or a `TokenBatch`.
        patches: applied in order; patches at one site compose.
        cache: sites whose (patched) activations to return as well: then the result is
            ``(logits, activations)``.
        record: an `EffectLog` that receives ||Δh|| of every patch.
        batch_size: inputs per forward pass (default: all at once). Each piece drops the padding it does not
            need; logits and cached activations are left-padded back to one width and joined.
        last_position: return only the logits at each input's last token, ``[batch, vocab]`` (the unembedding
            then runs on that position alone).
        reduce: ``reduce(logits, piece) -> tensor`` applied to each piece's logits; the results are joined
            along the first dimension (e.g. per-input losses, so that a large batch's full logits never exist).

    Gradients flow as the caller's grad mode allows (the model itself is frozen), so trainable
    interventions can be fitted through this call.
    """
    batch = encode(model, inputs)
    results, caches = [], []
    for piece in batch.split(batch_size):
        session = HookSession(model, patches, cache or (), record)
        logits = _last_logits(model, session, piece) if last_position else _forward(model, session, piece, None)
        if reduce is not None:
            logits = reduce(logits, piece)
        elif not last_position:
            logits = pad_left(logits, batch.tokens.shape[1])
        results.append(logits)
        if cache is not None:
            caches.append(_activations(session, piece))
    logits = results[0] if len(results) == 1 else torch.cat(results)
    return (logits, _join_activations(caches, batch)) if cache is not None else logits


def cache_sites(
    model: HookedTransformer,
    inputs: Inputs,
    sites: Iterable[Site | str],
    patches: Sequence[Patch] = (),
    *,
    batch_size: int | None = None,
) -> SiteActivations:
    """Activations at ``sites`` (after any ``patches``); the forward pass stops after the last layer needed.
    ``batch_size`` splits the inputs as in `run_with_patches`."""
    batch = encode(model, inputs)
    parts = []
    for piece in batch.split(batch_size):
        session = HookSession(model, patches, sites)
        if not session.cache_sites:
            raise ValueError("cache_sites needs at least one site")
        # Stopping after the last needed block also skips the final norm and unembedding at the last layer.
        _forward(model, session, piece, session.last_layer + 1)
        parts.append(_activations(session, piece))
    return _join_activations(parts, batch)


def interchange(
    model: HookedTransformer,
    base: Inputs,
    source: Inputs,
    patches: Sequence[Patch],
    *,
    cache: Iterable[Site | str] | None = None,
    record: EffectLog | None = None,
) -> Logits | tuple[Logits, SiteActivations]:
    """Interchange intervention: run ``source``, then ``base`` with the source activations available.

    Every patch's intervention sees ``context.source``: the source run's activation at the patch's
    site. Base and source are padded to one width, so columns align by distance from the end of the
    prompt (equal-length prompts align position by position). `FromSource` is the plain interchange;
    trainable interventions (DAS, invertible maps) read the source the same way.
    """
    base_batch, source_batch = encode_pair(model, base, source)
    sites = {patch.site for patch in patches}
    source_acts = cache_sites(model, source_batch, sites)
    session = HookSession(model, patches, cache or (), record)
    session.sources = dict(source_acts)
    _check_source_covers(session, base_batch, source_batch)
    logits = _forward(model, session, base_batch, None)
    return (logits, _activations(session, base_batch)) if cache is not None else logits


def _check_source_covers(session: HookSession, base: TokenBatch, source: TokenBatch) -> None:
    """Every edited base token must have a real (non-padding) source token in its column."""
    session.set_chunk(base.positions, base.prompt_lengths)
    for site, patches in session.patches.items():
        for patch in patches:
            mask = patch.mask(session.context(site))
            edited = torch.ones_like(base.attention_mask, dtype=torch.bool) if mask is None else mask
            edited = edited & base.attention_mask.bool()
            if bool((edited & ~source.attention_mask.bool()).any()):
                raise ValueError(
                    f"patch at {site} edits base tokens that have no source token in their column: the source "
                    "prompt is shorter. Restrict positions (e.g. [-1]) or use sources at least as long as bases."
                )


def run_from_layer(
    model: HookedTransformer,
    inputs: Inputs,
    resid_pre: Float[Tensor, "batch pos d_model"],
    layer: int,
    patches: Sequence[Patch] = (),
    *,
    stop_at_layer: int | None = None,
    cache: Iterable[Site | str] | None = None,
    record: EffectLog | None = None,
    sources: Mapping[Site, Activation] | None = None,
) -> Tensor | tuple[Tensor, SiteActivations]:
    """Continue a forward pass from ``resid_pre``, the residual stream entering block ``layer``.

    ``inputs`` (the tokens the residual stream came from) give the attention mask and the positions
    patches select. Blocks before ``layer`` do not run, so patches and cached sites must lie at or
    after ``blocks.{layer}.hook_resid_pre``: edit ``{layer-1}/res`` as ``{layer}/pre`` (the same
    activation). Returns the logits, or the residual stream leaving block ``stop_at_layer - 1``
    when ``stop_at_layer`` is given (plus the cached activations when ``cache`` is given). Many
    patched variants of one prompt then cost only the blocks after the first edit. ``sources``
    (activations of a source run, aligned column by column) reach interventions as ``context.source``.
    """
    batch = encode(model, inputs)
    if resid_pre.shape[:2] != batch.tokens.shape:
        raise ValueError(
            f"resid_pre has shape {tuple(resid_pre.shape)} but the inputs are [batch, pos] = "
            f"{tuple(batch.tokens.shape)}; pass the residual stream of exactly these inputs"
        )
    session = HookSession(model, patches, cache or (), record)
    session.sources = dict(sources or {})
    early = sorted(site for site in session.sites if site.order < Site(layer, "resid_pre").order)
    if early:
        raise ValueError(
            f"run_from_layer starts at block {layer}, so sites {[str(s) for s in early]} never run; "
            f"patch {layer}/pre instead of {layer - 1}/res, or start at an earlier layer"
        )
    if stop_at_layer is not None and session.sites and session.last_layer >= stop_at_layer:
        raise ValueError(f"a patched or cached site lies at or after stop_at_layer={stop_at_layer}")
    session.set_chunk(batch.positions, batch.prompt_lengths)
    with session.attached():
        out = tl.forward(model, resid_pre, batch.attention_mask, start_at_layer=layer, stop_at_layer=stop_at_layer)
    return (out, _activations(session, batch)) if cache is not None else out


def patching_sweep(
    model: HookedTransformer,
    base: Inputs,
    source: Inputs,
    sites: Sequence[Site | str],
    metric: Callable[[Logits], Tensor],
    positions: Sequence[int] | None = None,
) -> Float[Tensor, "site position"]:
    """Activation patching over sites x positions: ``metric(logits)`` with the source activation put in.

    Each cell patches one site at one prompt position (``positions`` default: every position of the
    shortest base prompt, counted from the end so that -1 is the last token). The base run is cached
    once and every patched run starts at the patched site's layer.
    """
    base_batch, source_batch = encode_pair(model, base, source)
    sites = [Site.parse(site) for site in sites]
    if positions is None:
        shortest = int(base_batch.prompt_lengths.min())
        positions = list(range(-shortest, 0))
    starts = sorted({site.layer for site in sites})
    source_acts = cache_sites(model, source_batch, sites)
    resid = cache_sites(model, base_batch, [Site(layer, "resid_pre") for layer in starts])
    results = torch.zeros(len(sites), len(positions))
    for i, site in enumerate(sites):
        start = resid[Site(site.layer, "resid_pre")]
        for j, position in enumerate(positions):
            patch = Patch(site, FromSource(), [position])
            logits = run_from_layer(
                model, base_batch, start, site.layer, [patch], sources={site: source_acts[site]}
            )
            results[i, j] = metric(logits).detach().float().cpu()
    return results
