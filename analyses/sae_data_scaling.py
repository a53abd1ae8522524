"""How far width 2304, k = 32 gets at 12/res: explained variance against distinct tokens (300k, 1.2M), passes over
them (1-8) and the attention-sink filter, with two reference runs at twice the width or twice the k, for one TopK
SAE on activations harvested once (forward pass in the machine's compute precision,
`flowsteer.models.precision`; the recorded rows used bfloat16) and scored on 16,256 held-out activations (no sink).

    flock /tmp/flowsteer-cpu.lock python analyses/sae_data_scaling.py > analyses/results/sae_data_scaling.jsonl
"""

from __future__ import annotations

import json

import torch
from sae_single_site import epoch_batches, fit_topk, harvest, score, window_batches

from flowsteer import load_model
from flowsteer.models.precision import resolve_precision
from flowsteer.saes.activations import sink_tokens
from flowsteer.saes.config import SAETrainingConfig
from flowsteer.sites import Site

RUNS = [  # (distinct tokens, passes, drop sinks, window of train_saes's round or None for full epochs, d_sae, k)
    (300_000, 1, False, None, 2304, 32), (300_000, 4, False, None, 2304, 32), (300_000, 1, True, None, 2304, 32),
    (300_000, 2, True, None, 2304, 32), (300_000, 4, True, None, 2304, 32), (300_000, 8, True, None, 2304, 32),
    (300_000, 4, True, 65_536, 2304, 32), (1_200_000, 1, True, None, 2304, 32), (1_200_000, 2, True, None, 2304, 32),
    (1_200_000, 4, True, None, 2304, 32), (300_000, 4, True, None, 4608, 32), (300_000, 4, True, None, 2304, 64),
]


def main() -> None:
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    site = Site(12)
    precision = resolve_precision("auto", "cpu")
    autocast_dtype = None if precision.dtype == torch.float32 else precision.dtype
    everything, order, held = harvest(model, site, 1_200_000, max_norm_ratio=None, autocast_dtype=autocast_dtype)
    everything = everything[order]
    sinks = sink_tokens(everything.norm(dim=-1)[None], 20.0)  # the default max_norm_ratio
    for tokens, passes, drop, window, d_sae, k in RUNS:
        x = everything[:tokens]
        excluded = int(sinks[:tokens].sum()) if drop else 0
        if drop:
            x = x[~sinks[:tokens]]
        config = SAETrainingConfig(tokens=len(x), passes=passes, d_sae=d_sae, k=k)
        batches = (epoch_batches(len(x), config.batch_size, passes) if window is None
                   else window_batches(len(x), config.batch_size, passes, window))
        sae, seconds = fit_topk(x, batches, config, model.cfg.d_model, site)
        metrics = score(sae, held)
        row = {"d_sae": d_sae, "k": k, "distinct_tokens": tokens, "passes": passes, "sinks_dropped": excluded,
               "window": window, "harvest_dtype": precision.name, "steps": config.total_steps, "s": round(seconds, 1),
               "held_out_tokens": metrics.pop("tokens"), **metrics}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
