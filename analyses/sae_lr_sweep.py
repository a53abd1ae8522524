"""Learning-rate / batch-size sweep for one TopK SAE (12/res, width 2304, k=32, 300k tokens) on activations
cached once, scored on 16,256 held-out activations. It keeps every token (``max_norm_ratio=None``), as when its
results were recorded (before the attention-sink filter existed).

    flock /tmp/flowsteer-cpu.lock python analyses/sae_lr_sweep.py > analyses/results/sae_lr_sweep.jsonl
"""

from __future__ import annotations

import json

import torch
from sae_single_site import fit_topk, harvest, score

from flowsteer import load_model
from flowsteer.saes.config import SAETrainingConfig
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
    x, order, held = harvest(model, site, 300_000, max_norm_ratio=None)
    x = x[order]  # the round's shuffled order, read in sequence
    for lr, batch, decay, aux in SWEEP:
        config = SAETrainingConfig(lr=lr, batch_size=batch, decay_fraction=decay, tokens=300_000)
        batches = (torch.arange(start, start + batch) for start in range(0, len(x) - batch + 1, batch))
        sae, seconds = fit_topk(x, batches, config, model.cfg.d_model, site, aux)
        row = {"lr": lr, "bs": batch, "window": config.dead_window, "decay": decay, "aux": aux,
               "s": round(seconds, 1), **score(sae, held)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
