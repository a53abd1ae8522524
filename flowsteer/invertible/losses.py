"""Loss terms for fitting invertible-map interventions through a frozen model.

- `kl_to_target`: interchange-intervention loss on the next-token distribution;
- `hinge_loss`: the self-supervised loss for implicit features, on projections of downstream
  activations onto given directions;
- `magnitude_penalty`: ``||h' - h||²`` relative to ``||h||²`` (the "smaller intervention" property,
  optimised rather than only observed);
- `class_gaussian_nll`, `separation_loss`: INNSteer-style latent class separation.

Which of these the papers specify and which are reconstructions is in docs/invertible.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from flowsteer.patching import SiteActivations
from flowsteer.sites import Site


def kl_to_target(
    logits: Float[Tensor, "batch vocab"], target_logprobs: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """``KL(p_target || p)`` per row, ``p = softmax(logits)``."""
    logprobs = logits.float().log_softmax(-1)
    target = target_logprobs.to(logprobs)
    return (target.exp() * (target - logprobs)).sum(-1)


def hinge_loss(
    activations: SiteActivations,
    directions: Mapping[Site, Float[Tensor, " d"]],
    thresholds: Mapping[Site, float],
    rows: Bool[Tensor, "batch pos"],
    margin: float = 0.0,
) -> Tensor:
    """``Σ_sites mean_rows max(0, <h, u> - τ + margin)``.

    Pushes the projection of each downstream activation onto its (unit) direction ``u`` below the
    threshold ``τ`` (e.g. the mean projection of prompts without the feature) by ``margin``.
    """
    total = torch.zeros((), device=rows.device)
    for site, direction in directions.items():
        h = activations[site][rows]
        unit = (direction / direction.norm()).to(h)
        total = total + F.relu(h @ unit - thresholds[site] + margin).mean()
    return total


def magnitude_penalty(h: Float[Tensor, "n d"], delta: Float[Tensor, "n d"]) -> Tensor:
    """``mean ||h' - h||² / mean ||h||²`` over the edited rows (dimensionless)."""
    return delta.float().pow(2).sum(-1).mean() / h.float().pow(2).sum(-1).mean().clamp_min(1e-12)


def class_gaussian_nll(
    z: Float[Tensor, "n d"], log_det: Float[Tensor, " n"], means: Float[Tensor, "n d"]
) -> Tensor:
    """Negative log-likelihood per dimension of ``x`` under ``f(x) ~ N(mean_of_its_class, I)``
    (the constant ½·log 2π dropped)."""
    return (0.5 * (z - means).pow(2).sum(-1) - log_det).mean() / z.shape[-1]


def separation_loss(z: Float[Tensor, "n d"], labels: Tensor, mean0: Tensor, mean1: Tensor) -> Tensor:
    """Logistic loss of the Bayes classifier between ``N(mean0, I)`` and ``N(mean1, I)``: the classes
    must sit on either side of the midpoint along the translation ``mean1 - mean0``."""
    logits = (z - (mean0 + mean1) / 2) @ (mean1 - mean0)
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits))
