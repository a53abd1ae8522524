"""Contrast directions from two prompt sets, for any behaviour: r[i, ℓ] = μ_positive[i, ℓ] − μ_negative[i, ℓ] of the
block inputs (``resid_pre``) at prompt position i (counted from the end) and layer ℓ, averaged in float64
(difference in means: Arditi et al.'s refusal direction with harmful vs harmless prompts, a theme vector with
theme vs neutral texts), and the two ways to use one as patches: activation addition (ActAdd) and directional
ablation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.models.chat import post_instruction_positions
from flowsteer.patching import AddVector, Patch, ProjectOut, cache_sites, encode
from flowsteer.patching.patch import PositionSpec
from flowsteer.paths import atomic_path, read_safetensors
from flowsteer.sites import Site, SiteKind

# Every block input, attention output and MLP output: what directional ablation edits.
ABLATION_KINDS: tuple[SiteKind, ...] = ("resid_pre", "attn_out", "mlp_out")

@torch.no_grad()
def mean_resid_pre(
    model: HookedTransformer,
    prompts: Sequence[str],
    positions: Sequence[int],
    layers: Sequence[int] | None = None,
    *,
    patches: Sequence[Patch] = (),
    batch_size: int = 16,
) -> Float[Tensor, "pos layer d_model"]:
    """Mean ``resid_pre`` over ``prompts`` at each of ``positions`` (negative: from the end of each
    prompt) and ``layers`` (default all), accumulated in float64; with ``patches`` applied (and seen
    where they act on a cached site)."""
    if not prompts:
        raise ValueError("mean_resid_pre needs at least one prompt")
    if any(p >= 0 for p in positions):
        raise ValueError(f"positions must be negative (counted from the end of the prompt), got {list(positions)}")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    sites = [Site(layer, "resid_pre").validate(model.cfg.n_layers) for layer in layers]
    index = torch.tensor(list(positions))
    total = torch.zeros(len(positions), len(layers), model.cfg.d_model, dtype=torch.float64)
    for batch in encode(model, list(prompts)).split(batch_size):
        activations = cache_sites(model, batch, sites, patches)
        shortest = int(activations.prompt_lengths.min())
        if -min(positions) > shortest:
            raise ValueError(f"position {min(positions)} does not exist in a prompt of {shortest} tokens")
        for j, site in enumerate(sites):
            # Left padding: the last columns are every prompt's last real tokens.
            total[:, j] += activations[site][:, index].double().sum(0).cpu()
    return total / len(prompts)


@dataclass(frozen=True)
class DiffInMeans:
    """Mean-difference directions at prompt ``positions`` x ``layers`` (float64): positive mean − negative mean."""

    positive_mean: Float[Tensor, "pos layer d_model"]
    negative_mean: Float[Tensor, "pos layer d_model"]
    positions: tuple[int, ...]
    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        expected = (len(self.positions), len(self.layers))
        for name in ("positive_mean", "negative_mean"):
            tensor = getattr(self, name)
            if tensor.ndim != 3 or tuple(tensor.shape[:2]) != expected:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {expected} + (d_model,)")

    @property
    def directions(self) -> Float[Tensor, "pos layer d_model"]:
        """r = positive mean − negative mean, unnormalised."""
        return self.positive_mean - self.negative_mean

    def direction(self, position: int, layer: int) -> Float[Tensor, " d_model"]:
        """The unnormalised direction at one (position, layer), float32."""
        try:
            i, j = self.positions.index(position), self.layers.index(layer)
        except ValueError:
            raise ValueError(
                f"no direction at position {position}, layer {layer}; positions {list(self.positions)}, "
                f"layers {self.layers[0]}..{self.layers[-1]}"
            ) from None
        return self.directions[i, j].float()

    def subset(self, positions: Sequence[int] | None = None, layers: Sequence[int] | None = None) -> DiffInMeans:
        """The directions at some of the positions and layers (None keeps all)."""
        positions = self.positions if positions is None else tuple(positions)
        layers = self.layers if layers is None else tuple(layers)
        missing = [p for p in positions if p not in self.positions] + [
            layer for layer in layers if layer not in self.layers
        ]
        if missing:
            raise ValueError(f"positions/layers {missing} are not in these directions")
        i = torch.tensor([self.positions.index(p) for p in positions])
        j = torch.tensor([self.layers.index(layer) for layer in layers])
        return DiffInMeans(self.positive_mean[i][:, j], self.negative_mean[i][:, j], tuple(positions), tuple(layers))

    def save(self, path: str | os.PathLike) -> None:
        """Write the means (float64) to a safetensors file, atomically."""
        tensors = {"positive_mean": self.positive_mean.contiguous(), "negative_mean": self.negative_mean.contiguous()}
        metadata = {"positions": ",".join(map(str, self.positions)), "layers": ",".join(map(str, self.layers))}
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, tmp, metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, d_model: int | None = None) -> DiffInMeans:
        """Read a file written by `save`; with ``d_model`` the width is checked against the model's."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no difference-in-means file at {path}")
        tensors = read_safetensors(path, "compute the means again and save them with DiffInMeans.save")
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        if "positions" not in metadata or "layers" not in metadata:
            raise ValueError(f"{path} is not a DiffInMeans file (no positions/layers metadata)")
        result = cls(
            tensors["positive_mean"],
            tensors["negative_mean"],
            tuple(int(p) for p in metadata["positions"].split(",")),
            tuple(int(layer) for layer in metadata["layers"].split(",")),
        )
        if d_model is not None and result.positive_mean.shape[-1] != d_model:
            raise ValueError(
                f"{path} holds directions of width {result.positive_mean.shape[-1]}, the model's d_model is {d_model}"
            )
        return result


def diff_in_means(
    model: HookedTransformer,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    positions: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> DiffInMeans:
    """Difference-in-means directions from two prompt sets (e.g. chat-formatted harmful and harmless prompts).

    ``positions`` default to `flowsteer.models.post_instruction_positions` (the chat template's tokens after the
    instruction), ``layers`` to all layers.
    """
    positions = post_instruction_positions(model) if positions is None else list(positions)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    return DiffInMeans(
        mean_resid_pre(model, positive, positions, layers, batch_size=batch_size),
        mean_resid_pre(model, negative, positions, layers, batch_size=batch_size),
        tuple(positions),
        tuple(layers),
    )


def ablation_patches(
    direction: Float[Tensor, " d_model"],
    n_layers: int,
    *,
    kinds: tuple[SiteKind, ...] = ABLATION_KINDS,
    positions: PositionSpec = "all",
) -> list[Patch]:
    """Directional ablation h ← h − (h·r̂) r̂ at ``kinds`` of every layer, so that no layer reads or
    writes the direction (r̂ = direction / ‖direction‖; Arditi et al.'s ``hook_utils``)."""
    ablate = ProjectOut(direction)
    return [Patch(Site(layer, kind), ablate, positions) for layer in range(n_layers) for kind in kinds]


def actadd_patches(
    direction: Float[Tensor, " d_model"],
    layer: int,
    coeff: float = 1.0,
    *,
    kind: SiteKind = "resid_pre",
    positions: PositionSpec = "all",
) -> list[Patch]:
    """Activation addition h ← h + coeff·r at one layer's ``kind`` (r unnormalised: coeff −1 removes the
    mean difference, +1 adds it)."""
    return [Patch(Site(layer, kind), AddVector(direction, coeff), positions)]


@torch.no_grad()
def mean_token_activation(
    model: HookedTransformer, texts: Sequence[str], site: Site | str, *, batch_size: int = 16
) -> Float[Tensor, " d_model"]:
    """Mean activation at ``site`` over every token of ``texts`` but each text's first (the attention sink) and the
    padding, accumulated in float64 (returned float32)."""
    if not texts:
        raise ValueError("mean_token_activation needs at least one text")
    site = Site.parse(site) if isinstance(site, str) else site
    total, count = torch.zeros(model.cfg.d_model, dtype=torch.float64), 0
    for batch in encode(model, list(texts)).split(batch_size):
        acts = cache_sites(model, batch, [site])[site]
        keep = (batch.positions >= 1).to(acts.device)
        total += (acts.double() * keep[..., None]).sum((0, 1)).cpu()
        count += int(keep.sum())
    if count == 0:
        raise ValueError("the texts have no token after their first")
    return (total / count).float()


def text_mean_difference(
    model: HookedTransformer, positive: Sequence[str], negative: Sequence[str], site: Site | str, **options
) -> Float[Tensor, " d_model"]:
    """A steering vector from two text sets (ActAdd / mean-difference steering from, e.g., a theme's texts vs all
    other texts): mean token activation at ``site`` over ``positive`` minus that over ``negative``."""
    return mean_token_activation(model, positive, site, **options) - mean_token_activation(model, negative, site,
                                                                                         **options)
