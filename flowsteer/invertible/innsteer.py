"""INNSteer-style steering (arXiv 2606.08454, reconstructed): a latent translation through a flow.

Training (`train_innsteer`) fits the flow ``f`` so that the two behaviour classes become unit
Gaussians that differ only by a translation, ``f(h) | y ~ N(μ_y, I)``:

    loss = w_nll · NLL(f(h) | μ_y)  +  w_sep · logistic loss of the Bayes classifier between the two

Under that model ``z + (μ_pos - μ_neg)`` carries the negative class exactly onto the positive one,
so the steering vector is ``v = mean f(pos) - mean f(neg)`` and the intervention
``h' = f⁻¹(f(h) + α·v)`` (`innsteer_intervention`), swept over α. The paper's own objective is not
public; papers.md 3.4 lists this as the proposal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from flowsteer.invertible.bijection import Bijection, data_init, tensor_dtype
from flowsteer.invertible.intervention import InvertibleIntervention, latent_delta
from flowsteer.invertible.losses import class_gaussian_nll, separation_loss
from flowsteer.invertible.training import History, TrainConfig, fit
from flowsteer.patching import Patch, TokenBatch
from flowsteer.patching.activations import collect_activations
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import Site


@dataclass
class INNSteerObjective:
    """Weights of the class-conditional Gaussian NLL and of the class-separation term."""

    nll_weight: float = 1.0
    separation_weight: float = 1.0


class _ClassFlow(nn.Module):
    """The flow plus the two latent class means (trained together)."""

    def __init__(self, bijection: Bijection, mean0: Tensor, mean1: Tensor):
        super().__init__()
        self.bijection = bijection
        self.means = nn.Parameter(torch.stack([mean0, mean1]))

    def loss(self, x: Tensor, labels: Tensor, objective: INNSteerObjective) -> tuple[Tensor, dict[str, float]]:
        z, log_det = self.bijection.forward_and_log_det(x)
        nll = class_gaussian_nll(z, log_det, self.means[labels])
        separation = separation_loss(z, labels, self.means[0], self.means[1])
        loss = objective.nll_weight * nll + objective.separation_weight * separation
        return loss, {"nll": float(nll.detach()), "separation": float(separation.detach())}


@dataclass
class INNSteerResult:
    """The trained flow's steering vector ``v = mean f(pos) - mean f(neg)`` (training split) and
    the training history, with the validation accuracy of the latent Bayes classifier."""

    delta: Float[Tensor, " d"]
    history: History
    val_accuracy: float


def train_innsteer(
    bijection: Bijection,
    positive: Float[Tensor, "n_pos d"],
    negative: Float[Tensor, "n_neg d"],
    *,
    objective: INNSteerObjective | None = None,
    config: TrainConfig | None = None,
    val_fraction: float = 0.2,
) -> INNSteerResult:
    """Fit ``bijection`` on activations of the two classes (rows) and return the steering vector.

    A seeded ``val_fraction`` of each class is held out for early stopping. Data-dependent layers
    (`ActNorm`) are initialised from the training rows first.
    """
    objective = objective or INNSteerObjective()
    config = config or TrainConfig(steps=300, batch_size=64, lr=1e-3, weight_decay=1e-3)
    if positive.shape[-1] != bijection.d or negative.shape[-1] != bijection.d:
        raise ValueError(f"activations must have {bijection.d} columns, got {positive.shape} and {negative.shape}")
    dtype = tensor_dtype(bijection, torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    splits = []
    for rows in (negative, positive):
        if len(rows) < 2:
            raise ValueError("each class needs at least 2 activation rows")
        order = torch.randperm(len(rows), generator=generator)
        n_val = max(1, round(val_fraction * len(rows)))
        splits.append((rows[order[n_val:]].to(dtype), rows[order[:n_val]].to(dtype)))
    (neg_train, neg_val), (pos_train, pos_val) = splits
    x_train = torch.cat([neg_train, pos_train])
    y_train = torch.cat([torch.zeros(len(neg_train)), torch.ones(len(pos_train))]).long()
    x_val = torch.cat([neg_val, pos_val])
    y_val = torch.cat([torch.zeros(len(neg_val)), torch.ones(len(pos_val))]).long()
    data_init(bijection, x_train)
    with torch.no_grad():
        mean0, mean1 = bijection(neg_train).mean(0), bijection(pos_train).mean(0)
    flow = _ClassFlow(bijection, mean0, mean1)
    history = fit(
        flow,
        lambda index: flow.loss(x_train[index], y_train[index], objective),
        len(x_train),
        lambda: flow.loss(x_val, y_val, objective)[0],
        config,
        desc="fit INNSteer flow",
    )
    with torch.no_grad():
        z = bijection(x_val)
        scores = (z - flow.means.mean(0)) @ (flow.means[1] - flow.means[0])
        accuracy = float(((scores > 0).long() == y_val).float().mean())
    return INNSteerResult(latent_delta(bijection, pos_train, neg_train), history, accuracy)


def innsteer_intervention(
    bijection: Bijection, delta: Float[Tensor, " d"], alpha: float = 1.0
) -> InvertibleIntervention:
    """``h' = f⁻¹(f(h) + α·v)``; ``intervention.with_alpha(a)`` gives the same steering at strength ``a``."""
    return InvertibleIntervention.shift(bijection, delta, alpha=alpha)


def fit_innsteer(
    model: HookedTransformer,
    site: Site | str,
    positive: Sequence[str] | TokenBatch,
    negative: Sequence[str] | TokenBatch,
    *,
    positions: PositionSpec = slice(1, None),
    map: str = "coupling",
    map_kwargs: Mapping | None = None,
    alpha: float = 1.0,
    objective: INNSteerObjective | None = None,
    config: TrainConfig | None = None,
) -> tuple[Patch, INNSteerResult]:
    """One call for command lines: activations of ``positive``/``negative`` prompts at ``site`` and
    ``positions``, a flow (`flowsteer.invertible.build_map` kind) fitted by `train_innsteer`, and a
    patch steering from negative towards positive by ``alpha`` at the same positions. For refusal
    bypass: positive = harmless, negative = harmful prompts."""
    from flowsteer.invertible.maps import build_map

    bijection = build_map(map, model.cfg.d_model, **dict(map_kwargs or {}))
    result = train_innsteer(
        bijection,
        collect_activations(model, positive, site, positions),
        collect_activations(model, negative, site, positions),
        objective=objective,
        config=config,
    )
    return Patch(site, innsteer_intervention(bijection, result.delta, alpha), positions), result
