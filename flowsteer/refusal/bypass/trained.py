"""Trained refusal-bypass methods, thin clients of `flowsteer.invertible` (maps, targets, trainers):

- interchange-trained maps (arXiv 2605.14749, reconstructed): ``h' = f⁻¹((1-m)⊙f(h) + m⊙z*)`` on the first ``k``
  latent coordinates at the post-instruction positions, ``f`` a rotation (DAS, `flowsteer.invertible.das_map`) or
  ActNorm -> rotation -> i-ResNet blocks (`flowsteer.invertible.aligned_iresnet_map`), trained by interchange (base
  harmful, source harmless) to lower the refusal log-odds with a magnitude penalty, then applied with ``z*`` the
  harmless mean latent of each position; the same i-ResNet map in shift mode on every token;
- INNSteer (arXiv 2606.08454, reconstructed): a coupling flow (`flowsteer.invertible.coupling_flow`) fitted on
  harmless vs harmful activations at the post-instruction positions, ``h' = f⁻¹(f(h) + α·v_p)`` with ``v_p`` the
  latent mean difference at position ``p``, α chosen on validation prompts.

Both trained maps start from the linear direction ``r``: the first rotated coordinate is the projection on ``r`` (on
the ActNorm-standardised scale for the i-ResNet map), so training starts at a DAS reading of it. Interventions are
values: each α is its own intervention over the shared map.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.invertible.bijection import Bijection
from flowsteer.invertible.innsteer import innsteer_intervention, train_innsteer
from flowsteer.invertible.intervention import InvertibleIntervention, latent_delta
from flowsteer.invertible.iresnet import IResBlock, inverse_reports
from flowsteer.invertible.maps import aligned_iresnet_map, coupling_flow, das_map
from flowsteer.invertible.masks import CoordinateMask
from flowsteer.invertible.nonlinear import InterchangeObjective, train_intervention
from flowsteer.invertible.targets import Shift
from flowsteer.invertible.training import TrainConfig
from flowsteer.models import post_instruction_positions
from flowsteer.patching import Patch
from flowsteer.patching.activations import collect_activations
from flowsteer.refusal import refusal_log_odds, refusal_token_ids
from flowsteer.refusal.bypass.data import BypassPrompts
from flowsteer.refusal.bypass.linear import LinearDirection, Steering
from flowsteer.sites import Site

# The one set of training defaults of the trained methods: interchange-trained maps, and INNSteer's flow fit.
INTERCHANGE_TRAINING = TrainConfig(steps=120, batch_size=8, lr=2e-3, eval_every=20, patience=3, progress=False)
FLOW_TRAINING = TrainConfig(
    steps=300, batch_size=64, lr=1e-3, weight_decay=1e-3, eval_every=25, patience=4, progress=False
)


def training_config(defaults: TrainConfig, *, steps: int | None = None, seed: int = 0) -> TrainConfig:
    """``defaults`` with another step budget (validation at least once) and seed."""
    steps = defaults.steps if steps is None else steps
    return replace(defaults, steps=steps, eval_every=max(1, min(defaults.eval_every, steps)), seed=seed)


def refusal_loss(token_ids: Sequence[int], margin: float = 2.0):
    """Training metric ``softplus(log-odds + margin)`` at the next token: pushes the refusal log-odds
    below ``-margin`` and stops pushing past it."""

    def metric(logits: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, " batch"]:
        return F.softplus(refusal_log_odds(logits[:, -1], token_ids) + margin)

    return metric


def paired(base: Sequence[str], source: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Pair every base prompt with a source prompt drawn (seeded, cycling) from ``source``."""
    order = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed)).tolist()
    return list(base), [source[order[i % len(order)]] for i in range(len(base))]


def per_position_patches(
    model: HookedTransformer,
    intervention: InvertibleIntervention,
    site: Site,
    harmless: Sequence[str],
    positions: Sequence[int],
) -> list[Patch]:
    """One patch per position whose ``z*`` is the mean latent of the ``harmless`` prompts at that position
    (map and mask shared): usable without a source run, e.g. in generation."""
    return [
        Patch(site, intervention.fixed_to_mean(collect_activations(model, harmless, site, [p])), [p]) for p in positions
    ]


def fit_interchange(
    model: HookedTransformer,
    prompts: BypassPrompts,
    direction: LinearDirection,
    *,
    kind: str = "nonlinear",
    layer: int | None = None,
    latent_size: int = 1,
    magnitude_weight: float = 1.0,
    config: TrainConfig | None = None,
    seed: int = 0,
) -> Steering:
    """DAS (``kind="das"``) or the i-ResNet map (``"nonlinear"``) at ``layer``'s resid_pre on the
    post-instruction positions, trained by interchange to bypass refusal (see the module docstring)."""
    if kind not in ("das", "nonlinear"):
        raise ValueError(f"kind must be 'das' or 'nonlinear', got {kind!r}")
    layer = direction.layer if layer is None else layer
    site = Site(layer, "resid_pre").validate(model.cfg.n_layers)
    positions = post_instruction_positions(model)
    config = config or training_config(INTERCHANGE_TRAINING, seed=seed)
    start = time.perf_counter()
    if kind == "das":
        bijection = das_map(direction.direction)
    else:
        rows = collect_activations(model, prompts.harmful_train + prompts.harmless_train, site, positions)
        bijection = aligned_iresnet_map(direction.direction, rows, seed=seed)
    intervention = InvertibleIntervention.interchange(bijection, CoordinateMask.first(bijection.d, latent_size))
    patch = Patch(site, intervention, positions)
    objective = InterchangeObjective(output=refusal_loss(refusal_token_ids(model)), magnitude_weight=magnitude_weight)
    base, source = paired(prompts.harmful_train, prompts.harmless_train, seed)
    val_base, val_source = paired(prompts.harmful_val, prompts.harmless_val, seed + 1)
    history = train_intervention(
        model, patch, base, source, objective=objective, config=config, val_base=val_base, val_source=val_source
    )
    patches = per_position_patches(model, intervention, site, prompts.harmless_train, positions)
    details = {
        "site": str(site),
        "positions": positions,
        "latent_size": latent_size,
        "magnitude_weight": magnitude_weight,
        "map": bijection.config(),
        "train_config": vars(config),
        "initial_val_loss": history.initial_val,
        "best_val_loss": history.best_val,
        "best_step": history.best_step,
        "steps_run": len(history.train),
        "fit_seconds": time.perf_counter() - start,
    }
    blocks = [layer for layer in getattr(bijection, "layers", []) if isinstance(layer, IResBlock)]
    if blocks:
        details["lipschitz_bounds"] = [block.lipschitz_bound() for block in blocks]
    return Steering("das" if kind == "das" else "nonlinear_iresnet", patches, details)


def fit_shift(
    model: HookedTransformer,
    prompts: BypassPrompts,
    direction: LinearDirection,
    *,
    layer: int | None = None,
    latent_size: int = 1,
    magnitude_weight: float = 1.0,
    config: TrainConfig | None = None,
    seed: int = 0,
) -> Steering:
    """The i-ResNet map in shift mode on every token but the first (generated ones included), like ActAdd:
    ``h' = f⁻¹(f(h) + m⊙δ)``, δ starting at the latent mean difference (harmless − harmful) and trained with
    the map on harmful prompts alone to lower the refusal log-odds, with the magnitude penalty."""
    layer = direction.layer if layer is None else layer
    site = Site(layer, "resid_pre").validate(model.cfg.n_layers)
    positions = slice(1, None)
    config = config or training_config(INTERCHANGE_TRAINING, seed=seed)
    start = time.perf_counter()
    harmless = collect_activations(model, prompts.harmless_train, site, positions)
    harmful = collect_activations(model, prompts.harmful_train, site, positions)
    bijection = aligned_iresnet_map(direction.direction, torch.cat([harmless, harmful]), seed=seed)
    delta = latent_delta(bijection, harmless, harmful)
    intervention = InvertibleIntervention(
        bijection, Shift(bijection.d, delta, 1.0, trainable=True), CoordinateMask.first(bijection.d, latent_size)
    )
    patch = Patch(site, intervention, positions)
    objective = InterchangeObjective(output=refusal_loss(refusal_token_ids(model)), magnitude_weight=magnitude_weight)
    history = train_intervention(
        model, patch, prompts.harmful_train, objective=objective, config=config, val_base=prompts.harmful_val
    )
    details = {
        "site": str(site),
        "positions": "every token but the first",
        "latent_size": latent_size,
        "magnitude_weight": magnitude_weight,
        "map": bijection.config(),
        "train_config": vars(config),
        "initial_latent_shift": float(delta[:latent_size].norm()),
        "latent_shift": float(intervention.target.delta.detach()[:latent_size].norm()),
        "initial_val_loss": history.initial_val,
        "best_val_loss": history.best_val,
        "best_step": history.best_step,
        "steps_run": len(history.train),
        "fit_seconds": time.perf_counter() - start,
        "lipschitz_bounds": [b.lipschitz_bound() for b in bijection.layers if isinstance(b, IResBlock)],
    }
    return Steering("nonlinear_shift", [patch], details)


@dataclass
class INNSteerFit:
    """A coupling flow fitted on harmless vs harmful activations and one latent translation per position; each
    strength α is its own `Steering` (`at`), all sharing the flow."""

    site: Site
    flow: Bijection
    shifts: list[tuple[int, Tensor]]
    details: dict

    def at(self, alpha: float) -> Steering:
        """``h' = f⁻¹(f(h) + α·v_p)`` at each post-instruction position ``p``."""
        patches = [Patch(self.site, innsteer_intervention(self.flow, delta, alpha), [p]) for p, delta in self.shifts]
        return Steering("innsteer", patches, self.details | {"alpha": alpha})


def fit_innsteer_bypass(
    model: HookedTransformer,
    prompts: BypassPrompts,
    direction: LinearDirection,
    *,
    layer: int | None = None,
    n_blocks: int = 4,
    hidden: int = 256,
    config: TrainConfig | None = None,
    seed: int = 0,
) -> INNSteerFit:
    """INNSteer at ``layer``'s resid_pre on the post-instruction positions: a coupling flow
    (`flowsteer.invertible.coupling_flow`) fitted on harmless (positive) vs harmful (negative) rows of every
    position, with one latent translation per position. The strength α is left to the caller (`INNSteerFit.at`):
    a comparison chooses it like any other setting."""
    layer = direction.layer if layer is None else layer
    site = Site(layer, "resid_pre").validate(model.cfg.n_layers)
    positions = post_instruction_positions(model)
    start = time.perf_counter()
    flow = coupling_flow(model.cfg.d_model, n_blocks=n_blocks, hidden=hidden, seed=seed)
    harmless_rows = collect_activations(model, prompts.harmless_train, site, positions)
    harmful_rows = collect_activations(model, prompts.harmful_train, site, positions)
    config = config or training_config(FLOW_TRAINING, seed=seed)
    result = train_innsteer(flow, harmless_rows, harmful_rows, config=config)
    shifts = [
        (p, latent_delta(flow, collect_activations(model, prompts.harmless_train, site, [p]),
                         collect_activations(model, prompts.harmful_train, site, [p])))
        for p in positions
    ]
    details = {
        "site": str(site),
        "positions": positions,
        "flow": flow.config(),
        "train_config": vars(config),
        "initial_val_loss": result.history.initial_val,
        "best_val_loss": result.history.best_val,
        "val_accuracy_latent_classifier": result.val_accuracy,
        "fit_seconds": time.perf_counter() - start,
    }
    return INNSteerFit(site, flow, shifts, details)


def inverse_residuals(steering: Steering) -> list[float]:
    """Largest relative fixed-point residual of each i-ResNet inverse in the steering's maps (last run)."""
    seen, residuals = set(), []
    for patch in steering.patches:
        intervention = patch.intervention
        if isinstance(intervention, InvertibleIntervention) and id(intervention.bijection) not in seen:
            seen.add(id(intervention.bijection))
            residuals += [report.residual for report in inverse_reports(intervention.bijection)]
    return residuals
