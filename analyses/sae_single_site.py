"""One TopK SAE trained on activations held in memory: the inner loop of `flowsteer.saes.train_saes` for a
single site, so that sweeps (`sae_lr_sweep.py`, `sae_data_scaling.py`) can reuse one harvest for many runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
from sae_lens.saes.sae import SAEMetadata

from flowsteer.data import token_chunks
from flowsteer.patching import cache_sites
from flowsteer.saes.activations import ActivationRounds
from flowsteer.saes.metrics import reconstruction_metrics
from flowsteer.saes.trainable import SparseTopK
from flowsteer.saes.training import SAETrainingConfig
from flowsteer.sites import Site


def harvest(model, site: Site, tokens: int, **rounds_options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(train activations [n, d] in a shuffled order, their order, held-out activations [16256, d])``."""
    activations, order = ActivationRounds(model, [site], token_chunks(model.tokenizer, "train", 128),
                                          round_tokens=tokens, seed=0, **rounds_options)[0]
    eval_chunks = token_chunks(model.tokenizer, "eval", 128)[:128]
    held = torch.cat([cache_sites(model, eval_chunks[i : i + 32], [site])[site][:, 1:].reshape(-1, model.cfg.d_model)
                      for i in range(0, 128, 32)])
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


def fit_topk(x: torch.Tensor, batches: Iterable[torch.Tensor], config: SAETrainingConfig, d_in: int, hook: str,
             aux: float = 1.0):
    """Train one SAE on rows ``batches`` of ``x`` (scaled to E||x|| = sqrt(d_in)); the exported sae-lens SAE
    and the seconds it took."""
    scale = math.sqrt(d_in) / x.norm(dim=-1).mean()
    sae = SparseTopK(d_in, config.d_sae, config.k, aux_coefficient=aux, generator=torch.Generator().manual_seed(0))
    sae.init_from_data(x[: 64 * config.batch_size] * scale)
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr, fused=True)
    since_fired = torch.zeros(config.d_sae, dtype=torch.long)
    start = time.time()
    for step, rows in enumerate(batches):
        if step >= config.total_steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate(step)
        loss, stats = sae.loss(x[rows] * scale, since_fired >= config.dead_window)
        loss.backward()
        since_fired += len(rows)
        since_fired[stats["fired"]] = 0
        sae.before_step()
        optimizer.step()
        optimizer.zero_grad()
        sae.after_step()
    seconds = time.time() - start
    return sae.export(float(scale), SAEMetadata(hook_name=hook)), seconds


def score(sae, held: torch.Tensor) -> dict[str, float]:
    return {k: round(v, 4) for k, v in reconstruction_metrics(sae, held).items()}
