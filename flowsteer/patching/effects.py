"""Measuring what patches did: ||Δh|| per token, relative to ||h||, and how many locations changed; optionally the
edited rows themselves, differentiable, for training penalties on the size of an intervention."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from flowsteer.patching.patch import Patch


@dataclass
class PatchEffect:
    """Norms of the change one patch made, over every real (non-padding) token it saw."""

    patch: Patch
    differentiable: bool = False
    delta_norms: list[Tensor] = field(default_factory=list)
    activation_norms: list[Tensor] = field(default_factory=list)
    rows: list[tuple[Tensor, Tensor]] = field(default_factory=list)

    def add(
        self,
        before: Float[Tensor, "b p d"],
        after: Float[Tensor, "b p d"],
        real: Bool[Tensor, "b p"],
        edited: Bool[Tensor, "b p"] | None = None,
    ) -> None:
        """Record one forward chunk: ``real`` marks non-padding columns, ``edited`` the ones the patch edited."""
        self.delta_norms.append((after - before).detach()[real].float().norm(dim=-1).cpu())
        self.activation_norms.append(before.detach()[real].float().norm(dim=-1).cpu())
        if self.differentiable:
            rows = real if edited is None else real & edited
            self.rows.append((before.detach()[rows], after[rows] - before.detach()[rows]))

    def edited_rows(self) -> tuple[Float[Tensor, "n d"], Float[Tensor, "n d"]]:
        """``(h, h' - h)`` of every edited row seen (the change keeps its gradient); needs ``differentiable``."""
        if not self.differentiable:
            raise ValueError("edited rows are kept only by EffectLog(differentiable=True)")
        if not self.rows:
            raise ValueError(f"the patch at {self.patch.site} saw no forward pass")
        return torch.cat([h for h, _ in self.rows]), torch.cat([delta for _, delta in self.rows])

    @property
    def delta(self) -> Float[Tensor, " n"]:
        """||h' - h|| for every real token seen (0 where the patch did not edit)."""
        return torch.cat(self.delta_norms) if self.delta_norms else torch.zeros(0)

    @property
    def norm(self) -> Float[Tensor, " n"]:
        """||h|| before the patch, aligned with `delta`."""
        return torch.cat(self.activation_norms) if self.activation_norms else torch.zeros(0)

    def changed(self, rtol: float = 1e-6) -> Bool[Tensor, " n"]:
        """Tokens where ||Δh|| > rtol·||h||."""
        return self.delta > rtol * self.norm

    def summary(self, rtol: float = 1e-6) -> dict[str, float]:
        """Mean ||Δh|| and ||Δh||/||h|| over changed tokens, and the fraction of tokens changed."""
        changed = self.changed(rtol)
        n = int(changed.sum())
        delta, norm = self.delta[changed], self.norm[changed]
        return {
            "tokens": int(self.delta.numel()),
            "tokens_changed": n,
            "fraction_changed": n / max(self.delta.numel(), 1),
            "mean_delta_norm": float(delta.mean()) if n else 0.0,
            "mean_relative_delta": float((delta / norm.clamp_min(1e-12)).mean()) if n else 0.0,
            "mean_activation_norm": float(norm.mean()) if n else 0.0,
        }


@dataclass
class EffectLog:
    """Pass as ``record=`` to `run_with_patches` / `generate_with_patches` to measure every patch.

    With ``differentiable=True`` it also keeps each patch's edited rows with their gradient (`PatchEffect.edited_rows`):
    how a trainer penalises the size of the intervention it trains."""

    differentiable: bool = False
    effects: list[PatchEffect] = field(default_factory=list)

    def effect(self, patch: Patch) -> PatchEffect:
        for effect in self.effects:
            if effect.patch is patch:
                return effect
        effect = PatchEffect(patch, self.differentiable)
        self.effects.append(effect)
        return effect

    def summary(self, rtol: float = 1e-6) -> dict[str, float]:
        """Totals over all patches: the tokens changed at any site, their mean ||Δh|| and relative size."""
        if not self.effects:
            return {"locations": 0, "locations_changed": 0, "mean_delta_norm": 0.0, "mean_relative_delta": 0.0}
        changed = [effect.changed(rtol) for effect in self.effects]
        deltas = torch.cat([effect.delta[mask] for effect, mask in zip(self.effects, changed, strict=True)])
        norms = torch.cat([effect.norm[mask] for effect, mask in zip(self.effects, changed, strict=True)])
        return {
            "locations": int(sum(mask.numel() for mask in changed)),
            "locations_changed": int(sum(int(mask.sum()) for mask in changed)),
            "mean_delta_norm": float(deltas.mean()) if len(deltas) else 0.0,
            "mean_relative_delta": float((deltas / norms.clamp_min(1e-12)).mean()) if len(deltas) else 0.0,
        }
