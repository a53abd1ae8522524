"""`SAEStepper`: the SAEs of one training run and their one fused optimiser: input scaling, the optimisation step
with dead-latent bookkeeping, checkpoint state and export. `flowsteer.saes.train_saes` feeds it rounds of activations;
sweeps over activations held in memory can drive it directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from sae_lens import (
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from flowsteer.models.precision import DTYPES
from flowsteer.saes.checkpoint import optimizer_from_flat, optimizer_to_flat
from flowsteer.saes.config import SAETrainingConfig
from flowsteer.saes.trainable import LensTrainable, SparseTopK
from flowsteer.sites import Site


def _site_seed(seed: int, site: Site) -> int:
    return seed * 1_000_003 + site.order[0] * 16 + site.order[1]


def build_trainable(config: SAETrainingConfig, d_in: int, site: Site, device: torch.device | str):
    """A fresh SAE for ``site``, initialised from a generator seeded by ``(config.seed, site)``."""
    seed = _site_seed(config.seed, site)
    if config.architecture == "topk":
        generator = torch.Generator().manual_seed(seed)
        return SparseTopK(
            d_in, config.d_sae, config.k, aux_coefficient=config.aux_coefficient,
            selection_dtype=DTYPES[config.resolved(device).selection_dtype], generator=generator, device=device,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.architecture == "jumprelu":
            cfg = JumpReLUTrainingSAEConfig(
                d_in=d_in, d_sae=config.d_sae, device=str(device), l0_coefficient=config.sparsity_coefficient,
                jumprelu_sparsity_loss_mode="quadratic", target_l0=float(config.k),
            )
            return LensTrainable(JumpReLUTrainingSAE(cfg))
        cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=config.d_sae, device=str(device),
                                        l1_coefficient=config.sparsity_coefficient)
        return LensTrainable(StandardTrainingSAE(cfg))


class SAEStepper:
    """One SAE per site (``config``, resolved precisions), trained together by one fused Adam.

    ``step`` counts optimiser steps (the learning-rate schedule reads it); ``since_fired`` counts, per site and
    latent, the tokens since it last fired (AuxK trains the dead ones); ``scales`` are the per-site input scales
    (``E||x||^2 = d_in``), estimated on the first activations seen and folded into the exported weights.
    """

    def __init__(self, config: SAETrainingConfig, sites: Sequence[Site], d_in: int, device: torch.device | str):
        self.config, self.sites, self.device = config, list(sites), torch.device(device)
        self.trainables = {site: build_trainable(config, d_in, site, self.device) for site in self.sites}
        params = [p for trainable in self.trainables.values() for p in trainable.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.lr, fused=self.device.type in ("cpu", "cuda"))
        self.since_fired = torch.zeros(len(self.sites), config.d_sae, dtype=torch.long, device=self.device)
        self.scales: Tensor | None = None
        self.step = 0

    def scale(self, activations: Float[Tensor, "sites tokens d"], order: Tensor) -> None:
        """Scale a round's activations in place; the first round sets the scales and initialises the SAEs."""
        if self.scales is None:
            d_in = activations.shape[-1]
            self.scales = math.sqrt(d_in) / activations.norm(dim=-1)[:, order].mean(dim=1)
            for i, trainable in enumerate(self.trainables.values()):
                trainable.init_from_data(activations[i, order[: 64 * self.config.batch_size]] * self.scales[i])
        activations *= self.scales[:, None, None]

    def train_batch(self, x: Float[Tensor, "sites batch d"]) -> tuple[Tensor, Tensor]:
        """One optimiser step on a batch at every site; returns each site's MSE and the batch's variance."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate(self.step)
        mse = torch.zeros(len(self.sites), device=self.device)
        variance = torch.zeros(len(self.sites), device=self.device)
        for i, trainable in enumerate(self.trainables.values()):
            loss, stats = trainable.loss(x[i], self.since_fired[i] >= config.dead_window)
            loss.backward()
            self.since_fired[i] += x.shape[1]
            self.since_fired[i, stats["fired"]] = 0
            mse[i] = stats["mse"]
            variance[i] = (x[i] - x[i].mean(0)).pow(2).sum(-1).mean()
        for trainable in self.trainables.values():
            trainable.before_step()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for trainable in self.trainables.values():
            trainable.after_step()
        self.step += 1
        return mse, variance

    def state(self) -> tuple[dict[str, Tensor], dict]:
        """Tensors and JSON-able metadata of everything a resumed run needs (`load_state`)."""
        tensors, optimizer_meta = optimizer_to_flat(self.optimizer)
        for site, trainable in self.trainables.items():
            for name, value in trainable.state_dict().items():
                tensors[f"{site}/{name}"] = value
        tensors["since_fired"], tensors["scales"] = self.since_fired, self.scales
        return tensors, {"step": self.step, "optimizer": optimizer_meta}

    def load_state(self, tensors: dict[str, Tensor], meta: dict) -> None:
        for site, trainable in self.trainables.items():
            trainable.load_state_dict({k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{site}/")})
            if hasattr(trainable, "step_index"):
                trainable.step_index = meta["step"]
        optimizer_from_flat(self.optimizer, tensors, meta["optimizer"])
        self.since_fired, self.scales, self.step = tensors["since_fired"], tensors["scales"], meta["step"]

    def export(self, metadata: dict) -> dict:
        """The trained SAEs as sae-lens inference SAEs (scales folded in), keyed by site."""
        if self.scales is None:
            raise RuntimeError("nothing was trained yet: the input scales are unknown")
        return {
            site: trainable.export(float(self.scales[i]), SAEMetadata(hook_name=site.hook_name, **metadata))
            for i, (site, trainable) in enumerate(self.trainables.items())
        }
