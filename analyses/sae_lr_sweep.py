"""Learning-rate / batch-size sweep for one TopK SAE (12/res, width 2304, k=32, 300k tokens) on activations
cached once, scored on 16,256 held-out activations. Mirrors the inner loop of `flowsteer.saes.train_saes`.

    flock /tmp/flowsteer-cpu.lock python analyses/sae_lr_sweep.py > analyses/results/sae_lr_sweep.jsonl
"""

from __future__ import annotations

import json
import math
import time

import torch
from sae_lens.saes.sae import SAEMetadata

from flowsteer import load_model
from flowsteer.data import token_chunks
from flowsteer.patching import cache_sites
from flowsteer.saes.activations import ActivationRounds
from flowsteer.saes.metrics import reconstruction_metrics
from flowsteer.saes.trainable import SparseTopK
from flowsteer.saes.training import SAETrainingConfig
from flowsteer.sites import Site

SWEEP = [  # (lr, batch, decay fraction, AuxK coefficient)
    (2e-3, 1024, 0.2, 1.0), (4e-3, 1024, 0.2, 1.0), (2e-3, 512, 0.2, 1.0), (4e-3, 512, 0.2, 1.0),
    (8e-3, 1024, 0.2, 1.0), (1e-3, 256, 0.2, 1.0), (2e-3, 256, 0.2, 1.0), (4e-3, 512, 0.5, 1.0),
    (2e-3, 1024, 0.2, 0.0),
]


def main() -> None:
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    site = Site(12)
    acts, order = ActivationRounds(model, [site], token_chunks(model.tokenizer, "train", 128),
                                   round_tokens=300_000, seed=0)[0]
    eval_chunks = token_chunks(model.tokenizer, "eval", 128)[:128]
    held = torch.cat([cache_sites(model, eval_chunks[i : i + 32], [site])[site][:, 1:].reshape(-1, 576)
                      for i in range(0, 128, 32)])
    x_all = acts[0]
    scale = math.sqrt(576) / x_all.norm(dim=-1).mean()
    for lr, batch, decay, aux in SWEEP:
        config = SAETrainingConfig(lr=lr, batch_size=batch, decay_fraction=decay, tokens=300_000)
        sae = SparseTopK(576, 2304, 32, aux_coefficient=aux, generator=torch.Generator().manual_seed(0))
        sae.init_from_data(x_all[order[:65536]] * scale)
        optimizer = torch.optim.Adam(sae.parameters(), lr=lr, fused=True)
        since_fired = torch.zeros(2304, dtype=torch.long)
        start = time.time()
        for step in range(config.total_steps):
            rows = order[step * batch : (step + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate(step)
            loss, stats = sae.loss(x_all[rows] * scale, since_fired >= config.dead_window)
            loss.backward()
            since_fired += batch
            since_fired[stats["fired"]] = 0
            sae.before_step()
            optimizer.step()
            optimizer.zero_grad()
            sae.after_step()
        metrics = reconstruction_metrics(sae.export(float(scale), SAEMetadata(hook_name=site.hook_name)), held)
        row = {"lr": lr, "bs": batch, "window": config.dead_window, "decay": decay, "aux": aux,
               "s": round(time.time() - start, 1), **{k: round(v, 4) for k, v in metrics.items()}}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
