"""Feature scales and SAE Match's parameter folding (arXiv 2410.07656, Eq. 4).

Folding moves a per-feature scale s_i out of the activation and into the weights:

    W_enc[:, i] /= s_i,   b_enc[i] /= s_i,   W_dec[i] *= s_i,   threshold[i] = 1 (JumpReLU)

For a JumpReLU SAE with s = threshold the SAE computes exactly the same output (the threshold
test ``pre > θ`` becomes ``pre / θ > 1``); decoder rows then live "in the scale of actual
reconstructions", which is what SAE Match's MSE/permutation matching compares. ReLU (Standard)
SAEs fold exactly for any positive s. TopK SAEs do not: dividing pre-activations by s_i changes
which k features win, so for them the scale is applied to the matching vectors only
(`matching_vectors`), never to a working SAE.

Which scale: a JumpReLU SAE's threshold θ (the paper's choice). TopK and Standard SAEs have no
threshold; `activation_scales` measures the mean non-zero activation of every feature on data
(documented choice; features never active get the median scale of the others). Without scales,
matching uses the decoder as it is (unfolded). Cosine matching is unaffected by any of this:
cosine similarity ignores per-feature scale.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from flowsteer.patching.features import check_sae, decoder_directions

Weights = Literal["decoder", "encoder", "both"]
WEIGHTS: tuple[str, ...] = ("decoder", "encoder", "both")


def check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; use one of {', '.join(WEIGHTS)}")


def is_jumprelu(sae: nn.Module) -> bool:
    return isinstance(getattr(sae, "threshold", None), Tensor)


def is_topk(sae: nn.Module) -> bool:
    return hasattr(sae.cfg, "k") and not is_jumprelu(sae)


def feature_scales(sae: nn.Module, scales: Tensor | None = None) -> Float[Tensor, " d_sae"] | None:
    """The per-feature scale used for folding: ``scales`` if given, else a JumpReLU SAE's threshold,
    else None (no folding). Non-positive thresholds cannot be folded and get scale 1 (with a warning)."""
    n_features = sae.cfg.d_sae
    if scales is not None:
        scales = torch.as_tensor(scales, dtype=torch.float32).detach()
        if scales.shape != (n_features,) or not bool((scales > 0).all()) or not bool(scales.isfinite().all()):
            raise ValueError(f"scales must be {n_features} finite positive numbers, one per feature")
        return scales
    if not is_jumprelu(sae):
        return None
    theta = sae.threshold.detach().float().cpu()
    bad = theta <= 0
    if bool(bad.any()):
        warnings.warn(
            f"{int(bad.sum())} JumpReLU thresholds are <= 0 and cannot be folded; they keep scale 1", stacklevel=2
        )
        theta = torch.where(bad, torch.ones_like(theta), theta)
    return theta


@torch.no_grad()
def fold(sae: nn.Module, scales: Tensor | None = None) -> nn.Module:
    """A copy of ``sae`` with feature scales folded into its weights (same outputs, see module doc).

    JumpReLU: scales default to the thresholds, which become 1. Standard (ReLU) SAEs need ``scales``.
    TopK SAEs raise: folding would change which features are selected.
    """
    check_sae(sae)
    if is_topk(sae):
        raise ValueError(
            "folding a TopK SAE changes which k features win, so its outputs would change; fold the matching "
            "vectors instead: matching_vectors(sae, 'decoder', scales)"
        )
    scales = feature_scales(sae, scales)
    if scales is None:
        raise ValueError(f"{type(sae).__name__} has no thresholds: pass scales (e.g. from activation_scales)")
    folded = copy.deepcopy(sae)
    s = scales.to(sae.W_dec.device, sae.W_dec.dtype)
    folded.W_enc.data /= s
    folded.b_enc.data /= s
    folded.W_dec.data *= s[:, None]
    if is_jumprelu(sae):
        ones = torch.ones_like(folded.threshold)
        folded.threshold.data = torch.where(sae.threshold.data > 0, ones, sae.threshold.data)
    return folded


@torch.no_grad()
def matching_vectors(
    sae: nn.Module, weights: Literal["decoder", "encoder"], scales: Tensor | None = None, *, fold: bool = True
) -> Float[Tensor, "d_sae d"]:
    """One vector per feature for MSE matching, in folded scale when a scale is known (and ``fold``).

    decoder: the feature's output per unit activation (`decoder_directions`) times s_i;
    encoder: the encoder column ``W_enc[:, i]`` divided by s_i.
    """
    scales = feature_scales(sae, scales) if fold else None
    if weights == "decoder":
        vectors = decoder_directions(sae)
        return vectors if scales is None else vectors * scales.to(vectors)[:, None]
    if weights == "encoder":
        vectors = sae.W_enc.detach().T
        return vectors.clone() if scales is None else vectors / scales.to(vectors)[:, None]
    raise ValueError(f"weights={weights!r}; use 'decoder' or 'encoder'")


@torch.no_grad()
def activation_scales(sae: nn.Module, activations: Iterable[Float[Tensor, "... d"]]) -> Float[Tensor, " d_sae"]:
    """Mean non-zero activation of every feature over ``activations`` (tensors of the SAE's site).

    Features that never fire get the median scale of the features that do.
    """
    check_sae(sae)
    total = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    count = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    for x in activations:
        acts = sae.encode(x.reshape(-1, x.shape[-1]).to(sae.W_dec)).double().cpu()
        total += acts.sum(0)
        count += (acts > 0).sum(0)
    if not bool((count > 0).any()):
        raise ValueError("no feature was ever active on these activations; pass more (or real) activations")
    scales = total / count.clamp_min(1)
    live = count > 0
    scales[~live] = scales[live].median()
    return scales.float()
