"""The one place flowsteer writes TransformerLens hooks.

A `HookSession` turns patches (and sites to cache) into forward hooks for the duration of one call.
Each forward chunk (a whole prompt, or one generated token with a KV cache) first tells the session
which real token positions its columns hold, so patches select positions correctly in every case.
Hooks are attached with ``model.hooks(...)``, which removes them when the call ends, also on error.
The first chunk at each site checks every patch's `Intervention.width` against the activation.

`HookSession.fwd_hooks` hands the same hooks out as TransformerLens ``(hook_name, fn)`` pairs for the
caller's own ``run_with_hooks``; with ``positions_from_shape=True`` (what `patches_to_fwd_hooks`
uses) each chunk's positions are read off the activation's shape instead of being declared.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.models import tl
from flowsteer.patching.effects import EffectLog
from flowsteer.patching.interventions import Activation, Context
from flowsteer.patching.patch import Patch
from flowsteer.sites import Site


class SiteActivations(dict[Site, Tensor]):
    """Activations keyed by `Site`, with the positions of their columns (-1 = padding)."""

    positions: Int[Tensor, "batch pos"]
    prompt_lengths: Int[Tensor, " batch"]

    def __getitem__(self, key: Site | str) -> Tensor:
        return super().__getitem__(Site.parse(key))

    def __contains__(self, key: object) -> bool:
        return super().__contains__(Site.parse(key) if isinstance(key, str) else key)


class HookSession:
    """Forward hooks for one call: patches in order per site, then caching and effect recording."""

    def __init__(
        self,
        model: HookedTransformer,
        patches: Sequence[Patch] = (),
        cache: Iterable[Site | str] = (),
        record: EffectLog | None = None,
        *,
        positions_from_shape: bool = False,
    ):
        n_layers = model.cfg.n_layers
        self.model = model
        self.patches: dict[Site, list[Patch]] = defaultdict(list)
        for patch in patches:
            if not isinstance(patch, Patch):
                raise TypeError(f"expected Patch objects, got {type(patch).__name__}: {patch!r}")
            self.patches[patch.site.validate(n_layers)].append(patch)
        self.cache_sites = {Site.parse(site).validate(n_layers) for site in cache}
        self.cached: dict[Site, list[Tensor]] = defaultdict(list)
        self.record = record
        self.sources: dict[Site, Activation] = {}
        self.positions: Tensor | None = None
        self.prompt_lengths: Tensor | None = None
        self.step: int | None = None
        self.positions_from_shape = positions_from_shape

    @property
    def sites(self) -> set[Site]:
        return set(self.patches) | self.cache_sites

    @property
    def last_layer(self) -> int:
        """The deepest layer any patch or cached site touches."""
        return max(site.layer for site in self.sites)

    def set_chunk(self, positions: Tensor, prompt_lengths: Tensor, step: int | None = None) -> None:
        """Declare the positions of the columns the next forward pass will see."""
        self.positions, self.prompt_lengths, self.step = positions, prompt_lengths, step

    def context(self, site: Site, activation: Activation | None = None) -> Context:
        """The `Context` of the current chunk at ``site``.

        With ``positions_from_shape`` the chunk is read off ``activation`` ([batch, pos, ...]):
        column j is real prompt position j of every row, no padding, no generation step.
        """
        if self.positions_from_shape and activation is not None:
            batch, width = activation.shape[:2]
            positions = torch.arange(width, device=activation.device).expand(batch, width)
            lengths = torch.full((batch,), width, device=activation.device)
            return Context(site, positions, lengths, None, None)
        if self.positions is None or self.prompt_lengths is None:
            raise RuntimeError("HookSession.set_chunk was not called before the forward pass")
        return Context(site, self.positions, self.prompt_lengths, self.step, self.sources.get(site))

    def _hook(self, site: Site):
        patches = self.patches.get(site, [])
        cache = site in self.cache_sites
        unchecked = bool(patches)

        def hook(activation: Activation, hook: object) -> Activation:
            nonlocal unchecked
            context = self.context(site, activation)
            if activation.shape[:2] != context.positions.shape:
                raise RuntimeError(
                    f"activation at {site} has shape {tuple(activation.shape)} but the session expected "
                    f"[batch, pos] = {tuple(context.positions.shape)}"
                )
            if unchecked:  # widths cannot change between chunks: check them once per call
                self._check_widths(site, patches, activation.shape[-1])
                unchecked = False
            for patch in patches:
                activation = self._apply(patch, activation, context)
            if cache:
                self.cached[site].append(activation)
            return activation

        return hook

    def _check_widths(self, site: Site, patches: list[Patch], width: int) -> None:
        """Raise ValueError naming the patch and site if an intervention needs another width."""
        cfg = self.model.cfg
        name = {cfg.d_mlp: "d_mlp", cfg.d_model: "d_model"}.get(width, "the width")
        for patch in patches:
            wanted = patch.intervention.width
            if wanted is not None and wanted != width:
                raise ValueError(
                    f"{type(patch.intervention).__name__} at {site} was built for activations of width {wanted}, "
                    f"but {site.hook_name} is {width} wide ({name} of {cfg.model_name}); rebuild it from a "
                    f"vector, direction, SAE or map of width {width} made on this model"
                )

    def _apply(self, patch: Patch, activation: Activation, context: Context) -> Activation:
        mask = patch.mask(context)
        if mask is not None and not bool(mask.any()):
            edited = activation
        else:
            edited = patch.intervention(activation, context.with_mask(mask))
            if edited.shape != activation.shape:
                raise ValueError(
                    f"{type(patch.intervention).__name__} at {patch.site} returned shape {tuple(edited.shape)}, "
                    f"expected {tuple(activation.shape)}"
                )
            if mask is not None:
                edited = torch.where(mask[..., None], edited, activation)
        if self.record is not None:
            self.record.effect(patch).add(activation, edited, context.positions >= 0, mask)
        return edited

    def fwd_hooks(self) -> list[tuple[str, Callable[[Activation, object], Activation]]]:
        """TransformerLens ``(hook_name, fn)`` pairs, one per site, in forward order."""
        return [(tl.hook_name(site), self._hook(site)) for site in sorted(self.sites)]

    @contextmanager
    def attached(self) -> Iterator[HookSession]:
        """Attach the hooks for the body of the ``with``; they are removed on exit, also on error."""
        with self.model.hooks(fwd_hooks=self.fwd_hooks()):
            yield self

    def activations(self) -> SiteActivations:
        """The cached activations, generation steps joined along positions."""
        result = SiteActivations({site: torch.cat(chunks, dim=1) for site, chunks in self.cached.items()})
        return result
