"""One TopK SAE trained on activations held in memory with `flowsteer.saes.SAEStepper` (the step `train_saes` uses),
in a batch order the sweep chooses, so that sweeps (`sae_lr_sweep.py`, `sae_data_scaling.py`) reuse one harvest for
many runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

import torch

from flowsteer.data import token_chunks
from flowsteer.patching import cache_sites
from flowsteer.saes.activations import ActivationRounds
from flowsteer.saes.config import SAETrainingConfig
from flowsteer.saes.metrics import reconstruction_metrics
from flowsteer.saes.stepper import SAEStepper
from flowsteer.sites import Site


def harvest(model, site: Site, tokens: int, **rounds_options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train activations [n, d] in a shuffled order, their order, held-out activations [16256, d])``."""
    activations, order = ActivationRounds(model, [site], token_chunks(model.tokenizer, "train", 128),
                                          round_tokens=tokens, seed=0, **rounds_options)[0]
    eval_chunks = token_chunks(model.tokenizer, "eval", 128)[:128]
    held = cache_sites(model, eval_chunks, [site], batch_size=32)[site][:, 1:].reshape(-1, model.cfg.d_model)
    return activations[0], order, held


def epoch_batches(n: int, batch: int, passes: int, seed: int = 1) -> Iterable[torch.Tensor]:
    """``passes`` full epochs over ``n`` rows, each in a fresh seeded order."""
    for pass_index in range(passes):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + pass_index))
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


def window_batches(n: int, batch: int, passes: int, window: int, seed: int = 1) -> Iterable[torch.Tensor]:
    """What `train_saes` does: ``passes`` reshuffled passes over each window (round) before the next."""
    base = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for start in range(0, n, window):
        rows = base[start : start + window]
        for pass_index in range(passes):
            generator = torch.Generator().manual_seed(seed + start + pass_index)
            shuffled = rows[torch.randperm(len(rows), generator=generator)]
            for offset in range(0, len(rows) - batch + 1, batch):
                yield shuffled[offset : offset + batch]


def fit_topk(x: torch.Tensor, batches: Iterable[torch.Tensor], config: SAETrainingConfig, d_in: int, site: Site,
             aux: float = 1.0):
    """Train one TopK SAE on rows ``batches`` of ``x`` with `SAEStepper`, the optimiser step of `train_saes` (inputs
    scaled to E||x||^2 = d_in); the exported sae-lens SAE and the seconds it took."""
    config = replace(config, architecture="topk", aux_coefficient=aux).resolved(x.device)
    stepper = SAEStepper(config, [site], d_in, x.device)
    rows = x[None].clone()  # [1 site, n, d], scaled in place
    stepper.scale(rows, torch.arange(len(x)))
    start = time.time()
    for batch in batches:
        if stepper.step >= config.total_steps:
            break
        stepper.train_batch(rows[:, batch])
    return stepper.export({})[site], time.time() - start


def score(sae, held: torch.Tensor) -> dict[str, float]:
    return {k: round(v, 4) for k, v in reconstruction_metrics(sae, held).items()}
