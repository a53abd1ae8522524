"""Quality of several trainers' SAEs on the same held-out tokens, with flowsteer's own metric functions.

* `reconstruction`: `flowsteer.saes.reconstruction_metrics` (explained variance, MSE, L0, dead
  fraction) per site on held-out activations harvested like the training cache (position 0 and
  attention sinks left out).
* `ce_recovered`: cross-entropy loss recovered per site, exactly as `flowsteer.saes.ce_losses` defines
  and computes it (each SAE spliced in through `SAEReconstruction` at positions 1.., zero ablation,
  clean run), but with the clean and zero-ablated runs shared by all trainers: ``ce_losses`` per trainer
  would repeat them. ``tests/test_benchmarks.py`` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from flowsteer.patching import Patch, Scale, run_with_patches
from flowsteer.saes import SAEReconstruction, reconstruction_metrics
from flowsteer.saes.metrics import _next_token_loss
from flowsteer.sites import Site

MEANS = ("explained_variance", "mse", "l0", "dead_fraction", "ce_loss_recovered")


def reconstruction(saes: Mapping[Site, object], held_out: Mapping[Site, Tensor]) -> dict[str, dict]:
    return {str(site): reconstruction_metrics(sae, held_out[site]) for site, sae in saes.items()}


@torch.no_grad()
def ce_recovered(model, trained: Mapping[str, Mapping[Site, object]], chunks: Tensor, sites: Sequence[Site],
                 batch_size: int = 16, skip_positions: int = 1) -> dict[str, dict[str, dict[str, float]]]:
    """``{trainer: {site: {ce_clean, ce_sae, ce_zero_ablated, ce_loss_recovered, ce_tokens}}}``."""
    positions = list(range(skip_positions, chunks.shape[1]))
    clean, zero = 0.0, dict.fromkeys(sites, 0.0)
    spliced = {name: dict.fromkeys(sites, 0.0) for name in trained}
    count = 0
    for start in range(0, len(chunks), batch_size):
        tokens = chunks[start : start + batch_size].to(model.cfg.device)

        def loss(patches, tokens=tokens):
            return float(_next_token_loss(run_with_patches(model, tokens, patches), tokens, skip_positions))

        clean += loss([])
        for site in sites:
            zero[site] += loss([Patch(site, Scale(0.0), positions)])
            for name, saes in trained.items():
                spliced[name][site] += loss([Patch(site, SAEReconstruction(saes[site]), positions)])
        count += tokens.shape[0] * (tokens.shape[1] - skip_positions - 1)
    result = {}
    for name in trained:
        result[name] = {}
        for site in sites:
            ce_clean, ce_sae, ce_zero = clean / count, spliced[name][site] / count, zero[site] / count
            gap = ce_zero - ce_clean
            result[name][str(site)] = {
                "ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero_ablated": ce_zero,
                "ce_loss_recovered": (ce_zero - ce_sae) / gap if gap != 0 else float("nan"), "ce_tokens": count,
            }
    return result


def mean_over_sites(per_site: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {key: sum(m[key] for m in per_site.values()) / len(per_site)
            for key in MEANS if all(key in m for m in per_site.values())}
