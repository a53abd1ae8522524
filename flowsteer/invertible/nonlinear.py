"""Fitting an `InvertibleIntervention` through the frozen model (arXiv 2605.14749, reconstructed).

`train_intervention` minimises, over the map's (and the target's, the mask's) parameters:

    w_out · output term  +  w_hinge · hinge term  +  w_mag · ||h' - h||²/||h||²  +  w_mask · mask size

- output term: with ``output="kl"``, ``KL(p_source || p_patched)`` of the next token after the
  prompt (base = e.g. harmful, source = harmless: the patched base should continue like the
  source); or any callable ``metric(logits) -> [batch]`` to minimise, such as a refusal log-odds;
- hinge term (implicit features, `HingeTerm`): projections of downstream activations of the
  patched run onto given directions pushed below thresholds;
- the intervention's target decides the run: `SourceLatent` targets go through
  `flowsteer.patching.interchange` (the source run supplies ``z*``), other targets through
  `run_with_patches` on the base alone.

Gradients reach the map through the frozen model; `fit` gives seeded batches, a progress bar and
early stopping on the validation loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.invertible.actnorm import ActNorm
from flowsteer.invertible.bijection import data_init, leaves
from flowsteer.invertible.intervention import InvertibleIntervention
from flowsteer.invertible.losses import hinge_loss, kl_to_target, magnitude_penalty
from flowsteer.invertible.training import History, TrainConfig, fit
from flowsteer.patching import EffectLog, Patch, interchange, run_with_patches
from flowsteer.patching.activations import collect_activations, position_mask
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import Site

Metric = Callable[[Float[Tensor, "batch pos vocab"]], Float[Tensor, " batch"]]


@dataclass
class HingeTerm:
    """Self-supervised loss on downstream directions: ``max(0, <h_site, u_site> - τ_site + margin)``.

    Args:
        directions: one direction per downstream site (normalised when used), pointing towards the
            feature to suppress (e.g. per-layer harmful-minus-harmless mean differences).
        thresholds: ``τ`` per site, e.g. `hinge_thresholds` on prompts without the feature.
        positions: the downstream tokens scored (default: the patch's own positions).
    """

    directions: Mapping[Site | str, Tensor]
    thresholds: Mapping[Site | str, float]
    margin: float = 0.0
    weight: float = 1.0
    positions: PositionSpec | None = None

    def __post_init__(self) -> None:
        self.directions = {Site.parse(site): torch.as_tensor(u).float() for site, u in self.directions.items()}
        self.thresholds = {Site.parse(site): float(t) for site, t in self.thresholds.items()}
        missing = set(self.directions) - set(self.thresholds)
        if missing:
            raise ValueError(f"hinge thresholds missing for sites {sorted(map(str, missing))}")


@torch.no_grad()
def hinge_thresholds(
    model: HookedTransformer,
    prompts: Sequence[str],
    directions: Mapping[Site | str, Tensor],
    positions: PositionSpec,
    batch_size: int = 16,
) -> dict[Site, float]:
    """Mean projection of ``prompts``' activations onto each unit direction at ``positions``."""
    result = {}
    for site, direction in directions.items():
        acts = collect_activations(model, prompts, site, positions, batch_size)
        result[Site.parse(site)] = float((acts @ (direction.float() / direction.norm()).to(acts)).mean())
    return result


@dataclass
class InterchangeObjective:
    """Weights and choices of the loss terms (see the module docstring)."""

    output: str | Metric = "kl"
    output_weight: float = 1.0
    hinge: HingeTerm | None = None
    magnitude_weight: float = 0.0
    mask_weight: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.output, str) and self.output != "kl":
            raise ValueError(f"output must be 'kl' or a callable metric(logits) -> [batch], got {self.output!r}")


@dataclass
class PromptPairs:
    """Base prompts and (optional) source prompts, paired one to one."""

    base: list[str]
    source: list[str] | None = None
    target_logprobs: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base = list(self.base)
        if not self.base:
            raise ValueError("no base prompts")
        if self.source is not None:
            self.source = list(self.source)
            if len(self.source) != len(self.base):
                raise ValueError(f"{len(self.base)} base prompts but {len(self.source)} source prompts; pair them")

    def __len__(self) -> int:
        return len(self.base)

    def take(self, index: Tensor | Sequence[int]) -> PromptPairs:
        index = [int(i) for i in index]
        return PromptPairs(
            [self.base[i] for i in index],
            None if self.source is None else [self.source[i] for i in index],
            None if self.target_logprobs is None else self.target_logprobs[index],
        )


@torch.no_grad()
def next_token_logprobs(model: HookedTransformer, prompts: Sequence[str], batch_size: int = 16) -> Tensor:
    """Log-probabilities of the token after each prompt (float32, on the CPU)."""
    logits = run_with_patches(model, list(prompts), batch_size=batch_size, last_position=True)
    return logits.float().log_softmax(-1).cpu()


def _intervention(patch: Patch) -> InvertibleIntervention:
    if not isinstance(patch.intervention, InvertibleIntervention):
        raise TypeError(f"train_intervention trains an InvertibleIntervention, got {type(patch.intervention).__name__}")
    return patch.intervention


def initialise_actnorms(model: HookedTransformer, patch: Patch, prompts: Sequence[str], batch_size: int = 16) -> None:
    """Data-initialise the map's uninitialised `ActNorm` layers from ``prompts`` at the patch's site
    and positions."""
    intervention = _intervention(patch)
    if any(isinstance(leaf, ActNorm) and not bool(leaf.initialized) for leaf in leaves(intervention.bijection)):
        data_init(intervention.bijection, collect_activations(model, prompts, patch.site, patch.positions, batch_size))


def batch_loss(
    model: HookedTransformer, patch: Patch, pairs: PromptPairs, objective: InterchangeObjective
) -> tuple[Tensor, dict[str, float]]:
    """The objective on one batch of prompt pairs, and its parts."""
    intervention = _intervention(patch)
    hinge = objective.hinge
    cache = list(hinge.directions) if hinge is not None else None
    record = EffectLog(differentiable=True)
    if intervention.target.uses_source:
        if pairs.source is None:
            raise ValueError("an interchange target needs source prompts")
        out = interchange(model, pairs.base, pairs.source, [patch], cache=cache, record=record)
    else:
        out = run_with_patches(model, pairs.base, [patch], cache=cache, record=record)
    logits, acts = out if cache is not None else (out, None)
    parts: dict[str, Tensor] = {}
    if objective.output == "kl":
        if pairs.target_logprobs is None:
            raise ValueError("output='kl' needs source prompts: their next-token distribution is the target")
        parts["output"] = kl_to_target(logits[:, -1], pairs.target_logprobs.to(logits.device)).mean()
    else:
        parts["output"] = objective.output(logits).float().mean()
    loss = objective.output_weight * parts["output"]
    if hinge is not None:
        rows = position_mask(patch.site, hinge.positions or patch.positions, acts.positions, acts.prompt_lengths)
        parts["hinge"] = hinge_loss(acts, hinge.directions, hinge.thresholds, rows, hinge.margin)
        loss = loss + hinge.weight * parts["hinge"]
    h, delta = record.effect(patch).edited_rows()
    if len(h):
        parts["magnitude"] = magnitude_penalty(h, delta)
        loss = loss + objective.magnitude_weight * parts["magnitude"]
    if objective.mask_weight:
        parts["mask"] = intervention.mask.penalty()
        loss = loss + objective.mask_weight * parts["mask"]
    return loss, {name: float(value.detach()) for name, value in parts.items()}


def _split(pairs: PromptPairs, fraction: float, seed: int) -> tuple[PromptPairs, PromptPairs]:
    if not 0 < fraction < 1 or len(pairs) < 2:
        raise ValueError(f"cannot split {len(pairs)} pairs with val_fraction={fraction}; pass validation prompts")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(fraction * len(pairs)))
    return pairs.take(order[n_val:]), pairs.take(order[:n_val])


def train_intervention(
    model: HookedTransformer,
    patch: Patch,
    base: Sequence[str],
    source: Sequence[str] | None = None,
    *,
    objective: InterchangeObjective | None = None,
    config: TrainConfig | None = None,
    val_base: Sequence[str] | None = None,
    val_source: Sequence[str] | None = None,
    val_fraction: float = 0.2,
) -> History:
    """Fit ``patch.intervention`` (an `InvertibleIntervention`) in place; returns the `History`.

    ``base``/``source`` are paired prompts (e.g. harmful/harmless, chat-formatted). Without
    ``val_base`` a seeded ``val_fraction`` of the pairs is held out for early stopping. Uninitialised
    `ActNorm` layers are first initialised from the training prompts at the patch's positions.
    """
    objective = objective or InterchangeObjective()
    config = config or TrainConfig()
    intervention = _intervention(patch)
    train = PromptPairs(base, source)
    val = PromptPairs(val_base, val_source) if val_base is not None else None
    if val is None:
        train, val = _split(train, val_fraction, config.seed)
    if objective.output == "kl":
        for pairs in (train, val):
            if pairs.source is None:
                raise ValueError("output='kl' needs source prompts for training and validation")
            pairs.target_logprobs = next_token_logprobs(model, pairs.source, config.batch_size)
    initialise_actnorms(model, patch, train.base + (train.source or []), config.batch_size)

    def val_loss() -> float:
        losses = [
            batch_loss(model, patch, val.take(index), objective)[0] * len(index)
            for index in torch.arange(len(val)).split(config.batch_size)
        ]
        return float(sum(losses) / len(val))

    return fit(
        intervention,
        lambda index: batch_loss(model, patch, train.take(index), objective),
        len(train),
        val_loss,
        config,
        desc=f"fit {type(intervention.bijection).__name__} at {patch.site}",
    )


@torch.no_grad()
def for_generation(
    model: HookedTransformer,
    patch: Patch,
    source_prompts: Sequence[str],
    positions: PositionSpec | None = None,
) -> Patch:
    """An interchange-trained patch made usable without a source run: ``z*`` becomes the mean latent
    of ``source_prompts`` (e.g. harmless prompts) at the patch's positions, applied at ``positions``
    (default: the patch's own)."""
    intervention = _intervention(patch)
    acts = collect_activations(model, source_prompts, patch.site, patch.positions)
    fixed = intervention.fixed_to_mean(acts)
    return Patch(patch.site, fixed, patch.positions if positions is None else positions)


def fit_nonlinear(
    model: HookedTransformer,
    site: Site | str,
    base: Sequence[str],
    source: Sequence[str],
    *,
    positions: PositionSpec = (-1,),
    map: str = "iresnet",
    map_kwargs: Mapping | None = None,
    latent_size: int = 16,
    objective: InterchangeObjective | None = None,
    config: TrainConfig | None = None,
    val_base: Sequence[str] | None = None,
    val_source: Sequence[str] | None = None,
) -> tuple[Patch, History]:
    """One call for command lines: build a map (`flowsteer.invertible.build_map` kind), put an
    interchange intervention on its first ``latent_size`` coordinates at ``site``/``positions``,
    train it with `train_intervention`, and return the patch (still an interchange: see
    `for_generation`) and the history."""
    from flowsteer.invertible.maps import build_map
    from flowsteer.invertible.masks import CoordinateMask

    d = model.cfg.d_model
    bijection = build_map(map, d, **dict(map_kwargs or {}))
    intervention = InvertibleIntervention.interchange(bijection, CoordinateMask.first(d, latent_size))
    patch = Patch(site, intervention, positions)
    history = train_intervention(
        model, patch, base, source, objective=objective, config=config, val_base=val_base, val_source=val_source
    )
    return patch, history
