"""Invertible maps and the non-linear interventions built on them.

- Bijections (`Bijection`: forward, inverse, log-det): `Identity`, `ActNorm`, `Orthogonal`,
  `IResBlock`, `AffineCoupling`, `Permutation`, chained by `Composition`; factories `identity_map`,
  `orthogonal_map`, `iresnet_map`, `coupling_flow`, and those started at a linear direction (`das_map`,
  `aligned_iresnet_map`). Refusal bypass builds its maps here.
- `InvertibleIntervention`: ``h' = f⁻¹((1 - m)⊙f(h) + m⊙z*)`` as a patching-API intervention, with
  latent targets (`SourceLatent`, `Shift`, `FixedLatent`) and masks (`CoordinateMask`, `SoftMask`).
- Training through the frozen model: `train_intervention` (interchange / metric loss, hinge loss on
  downstream directions, magnitude penalty) and `train_innsteer` (latent class separation, then
  ``h' = f⁻¹(f(h) + α·v)``).
- Persistence: `save_intervention` / `load_intervention`, `save_map` / `load_map`.

See docs/invertible.md.
"""

from flowsteer.invertible.actnorm import ActNorm
from flowsteer.invertible.bijection import Bijection, Composition, Identity, build_bijection, data_init
from flowsteer.invertible.coupling import AffineCoupling, Permutation
from flowsteer.invertible.innsteer import (
    INNSteerObjective,
    INNSteerResult,
    fit_innsteer,
    innsteer_intervention,
    train_innsteer,
)
from flowsteer.invertible.intervention import InvertibleIntervention, latent_delta
from flowsteer.invertible.io import load_intervention, load_map, save_intervention, save_map
from flowsteer.invertible.iresnet import FixedPointReport, IResBlock, LipSwish, refresh_spectral_norms
from flowsteer.invertible.losses import hinge_loss, kl_to_target, magnitude_penalty
from flowsteer.invertible.maps import (
    MAP_KINDS,
    aligned_iresnet_map,
    build_map,
    coupling_flow,
    das_map,
    identity_map,
    iresnet_map,
    orthogonal_map,
    rotation_from,
)
from flowsteer.invertible.masks import CoordinateMask, LatentMask, SoftMask
from flowsteer.invertible.nonlinear import (
    HingeTerm,
    InterchangeObjective,
    fit_nonlinear,
    for_generation,
    hinge_thresholds,
    next_token_logprobs,
    train_intervention,
)
from flowsteer.invertible.orthogonal import Orthogonal
from flowsteer.invertible.targets import FixedLatent, LatentTarget, Shift, SourceLatent
from flowsteer.invertible.training import History, TrainConfig, fit
from flowsteer.patching.activations import collect_activations

__all__ = [
    "MAP_KINDS",
    "ActNorm",
    "AffineCoupling",
    "Bijection",
    "Composition",
    "CoordinateMask",
    "FixedLatent",
    "FixedPointReport",
    "HingeTerm",
    "History",
    "INNSteerObjective",
    "INNSteerResult",
    "IResBlock",
    "Identity",
    "InterchangeObjective",
    "InvertibleIntervention",
    "LatentMask",
    "LatentTarget",
    "LipSwish",
    "Orthogonal",
    "Permutation",
    "Shift",
    "SoftMask",
    "SourceLatent",
    "TrainConfig",
    "build_bijection",
    "aligned_iresnet_map",
    "build_map",
    "collect_activations",
    "coupling_flow",
    "data_init",
    "fit",
    "fit_innsteer",
    "fit_nonlinear",
    "for_generation",
    "hinge_loss",
    "hinge_thresholds",
    "das_map",
    "identity_map",
    "innsteer_intervention",
    "iresnet_map",
    "kl_to_target",
    "latent_delta",
    "load_intervention",
    "load_map",
    "magnitude_penalty",
    "next_token_logprobs",
    "orthogonal_map",
    "rotation_from",
    "refresh_spectral_norms",
    "save_intervention",
    "save_map",
    "train_innsteer",
    "train_intervention",
]
