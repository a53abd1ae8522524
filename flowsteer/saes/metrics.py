"""How good an SAE is: explained variance, MSE, L0, dead latents, cross-entropy loss recovered.

Reconstruction metrics use activations at positions 1.. of held-out chunks (position 0, the attention
sink, is never trained on), without the later attention sinks training leaves out
(`flowsteer.saes.activations.sink_tokens`; their number is reported as ``excluded_tokens``).
Definitions, over N tokens with activations x and reconstructions x̂:

* ``mse``: mean over tokens of ||x - x̂||² (summed over dimensions, the training loss);
* ``explained_variance``: 1 - sum ||x - x̂||² / sum ||x - mean(x)||²;
* ``l0``: mean number of non-zero latents per token;
* ``dead_fraction``: share of latents that never fire on the N tokens;
* ``ce_loss_recovered``: (CE_zero - CE_sae) / (CE_zero - CE_clean), where CE is the next-token loss
  of predictions from positions 1.. and the SAE (or zero) is spliced in at positions 1.. of its
  site through `flowsteer.patching.run_with_patches`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.display import markdown_table
from flowsteer.evals.capability import token_nll
from flowsteer.patching import Patch, Scale, cache_sites, run_with_patches
from flowsteer.saes.activations import sink_detector_sites, sink_tokens
from flowsteer.saes.bank import SAEBank
from flowsteer.saes.splice import SAEReconstruction
from flowsteer.sites import Site


@torch.no_grad()
def reconstruction_metrics(sae: SAE, x: Float[Tensor, "n d"], batch_size: int = 4096) -> dict[str, float]:
    """Explained variance, MSE, L0 and dead fraction of ``sae`` on activations ``x``."""
    x = x.to(sae.device, sae.dtype)
    squared_error = 0.0
    active = 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool, device=x.device)
    for batch in x.split(batch_size):
        acts = sae.encode(batch)
        squared_error += float((sae.decode(acts) - batch).double().pow(2).sum())
        nonzero = acts != 0
        active += float(nonzero.sum())
        fired |= nonzero.any(0)
    total_variance = float((x.double() - x.double().mean(0)).pow(2).sum())
    n = len(x)
    return {
        "explained_variance": 1 - squared_error / total_variance,
        "mse": squared_error / n,
        "l0": active / n,
        "dead_fraction": 1 - float(fired.float().mean()),
        "tokens": n,
    }


def _next_token_loss(logits: Tensor, tokens: Tensor, first: int) -> Tensor:
    """Summed CE of predictions from positions ``first``..L-2."""
    return token_nll(logits, tokens)[:, first:].sum()


@torch.no_grad()
def ce_losses(
    model: HookedTransformer,
    bank: SAEBank,
    chunks: Int[Tensor, "rows context"],
    *,
    sites: Sequence[Site] | None = None,
    batch_size: int = 16,
    skip_positions: int = 1,
    bar: tqdm | None = None,
) -> dict[str, dict[str, float]]:
    """Clean, SAE-spliced and zero-ablated next-token CE per site, and the loss recovered (``bar``, if given, is
    advanced once per forward pass)."""
    bar = tqdm(disable=True) if bar is None else bar
    sites = list(sites or bank.sites)
    positions = list(range(skip_positions, chunks.shape[1]))
    totals = {"clean": 0.0, **{f"{s}/sae": 0.0 for s in sites}, **{f"{s}/zero": 0.0 for s in sites}}
    count = 0
    for tokens in chunks.to(model.cfg.device).split(batch_size):
        totals["clean"] += float(_next_token_loss(run_with_patches(model, tokens), tokens, skip_positions))
        bar.update()
        for site in sites:
            for name, intervention in (("sae", SAEReconstruction(bank[site])), ("zero", Scale(0.0))):
                logits = run_with_patches(model, tokens, [Patch(site, intervention, positions)])
                totals[f"{site}/{name}"] += float(_next_token_loss(logits, tokens, skip_positions))
                bar.update()
        count += tokens.shape[0] * (tokens.shape[1] - skip_positions - 1)
    clean = totals["clean"] / count
    result = {}
    for site in sites:
        with_sae, zero = totals[f"{site}/sae"] / count, totals[f"{site}/zero"] / count
        gap = zero - clean
        result[str(site)] = {
            "ce_clean": clean,
            "ce_sae": with_sae,
            "ce_zero_ablated": zero,
            "ce_loss_recovered": (zero - with_sae) / gap if gap != 0 else float("nan"),
            "ce_tokens": count,
        }
    return result


@torch.no_grad()
def evaluate_bank(
    model: HookedTransformer,
    bank: SAEBank,
    chunks: Int[Tensor, "rows context"] | None = None,
    *,
    eval_tokens: int = 32_768,
    ce_tokens: int = 4_096,
    batch_size: int = 32,
    skip_positions: int = 1,
    max_norm_ratio: float | None = 20.0,
    progress: bool = True,
) -> BankMetrics:
    """Every metric for every SAE of ``bank`` on held-out chunks (default: the corpus's eval split).

    Reconstruction metrics use the first ``eval_tokens`` activations per site (one forward pass for
    all sites) less the attention sinks of ``max_norm_ratio`` (as in training; None keeps them); CE metrics
    use the first ``ce_tokens`` tokens (two patched forward passes per site). A tqdm bar counts the forward
    passes unless ``progress=False``.
    """
    bank.validate(model)
    if chunks is None:
        from flowsteer.data import token_chunks

        context = int(bank.info.get("training", {}).get("context", 128))
        chunks = token_chunks(model.tokenizer, "eval", context)
    per_chunk = chunks.shape[1] - skip_positions
    n_chunks = min(len(chunks), -(-eval_tokens // per_chunk))
    detectors = sink_detector_sites(bank.sites) if max_norm_ratio is not None else []
    collected: dict[Site, list[Tensor]] = {site: [] for site in bank}
    norms: list[Tensor] = []
    n_ce = min(len(chunks), max(1, -(-ce_tokens // per_chunk)))
    ce_batch = batch_size // 2 or 1
    passes = -(-n_chunks // batch_size) + (1 + 2 * len(bank.sites)) * -(-n_ce // ce_batch)
    bar = tqdm(total=passes, desc=f"evaluate {len(bank.sites)} SAEs", unit="pass", disable=not progress, leave=False)
    for tokens in chunks[:n_chunks].to(model.cfg.device).split(batch_size):
        bar.update()
        acts = cache_sites(model, tokens, {*bank.sites, *detectors})
        for site in bank:
            collected[site].append(acts[site][:, skip_positions:].reshape(-1, acts[site].shape[-1]))
        if detectors:
            norms.append(torch.stack([acts[site][:, skip_positions:].float().norm(dim=-1).flatten()
                                      for site in detectors]))
    sinks = sink_tokens(torch.cat(norms, 1), max_norm_ratio) if detectors else None
    results = {}
    for site in bank:
        activations = torch.cat(collected.pop(site))
        results[str(site)] = reconstruction_metrics(bank[site], activations if sinks is None else activations[~sinks])
        results[str(site)]["excluded_tokens"] = 0 if sinks is None else int(sinks.sum())
    for site, ce in ce_losses(model, bank, chunks[:n_ce], batch_size=ce_batch, skip_positions=skip_positions,
                              bar=bar).items():
        results[site].update(ce)
    bar.close()
    return BankMetrics(results)


def metrics_markdown(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of `evaluate_bank` results, one row per site."""
    headers = ["site", "explained variance", "MSE", "L0", "dead", "CE clean", "CE with SAE", "CE zero-ablated",
               "CE loss recovered"]
    nan = float("nan")
    rows = [
        [site, m["explained_variance"], f"{m['mse']:.2f}", f"{m['l0']:.1f}", f"{100 * m['dead_fraction']:.1f}%",
         m.get("ce_clean", nan), m.get("ce_sae", nan), m.get("ce_zero_ablated", nan), m.get("ce_loss_recovered", nan)]
        for site, m in results.items()
    ]
    return markdown_table(headers, rows)


class BankMetrics(dict):
    """`evaluate_bank`'s result: ``{site: {metric: value}}`` (a plain, JSON-able dict) shown as a table in
    notebooks."""

    def _repr_markdown_(self) -> str:
        return metrics_markdown(self)
