"""Demo section: the SAE bank for a band of layers (trained once, then reused from the user cache)."""

from __future__ import annotations

import time
from dataclasses import replace

from flowsteer.demo.report import DemoContext
from flowsteer.saes import bank_cache_path, default_bank, evaluate_bank, metrics_markdown
from flowsteer.saes.default import DEFAULT_CONFIG
from flowsteer.sites import Site


def run(context: DemoContext) -> None:
    settings, model = context.settings, context.model
    context.section("SAEs for a band of layers")
    config = replace(DEFAULT_CONFIG, d_sae=settings.sae_width, k=settings.sae_k, tokens=settings.bank_tokens)
    sites = sorted(Site.parse(f"{layer}/{kind}") for layer in settings.bank_layers for kind in settings.bank_kinds)
    cached = (bank_cache_path(model, sites, config) / "bank.json").is_file()
    context.say(f"{len(sites)} TopK SAEs (width {config.d_sae}, k {config.k}) at layers "
                f"{settings.bank_layers[0]}-{settings.bank_layers[-1]}: "
                + ("reusing the cached bank" if cached
                   else f"training on {config.tokens:,} tokens per site, {config.passes} passes (once)"))
    start = time.perf_counter()
    if settings.chunks is None:
        bank = default_bank(model, settings.bank_layers, settings.bank_kinds, config=config,
                            progress=context.progress)
        metrics = bank.info["metrics"]
    else:  # test sizes: train on the given chunks, no cache
        from flowsteer.saes import train_saes

        bank = train_saes(model, sites, config, chunks=settings.chunks, progress=False)
        metrics = evaluate_bank(model, bank, settings.chunks, eval_tokens=settings.eval_tokens, ce_tokens=256,
                                progress=context.progress)
    context.bank = bank
    context.write(
        f"{len(bank)} TopK SAEs (width {config.d_sae}, k = {config.k}, {config.tokens:,} training tokens per site "
        f"seen {config.passes} times, all trained from one forward pass per batch) "
        + ("reused from the user cache" if cached else f"trained in {time.perf_counter() - start:.0f} s")
        + (f" ({bank.info['path']})." if "path" in bank.info else "."),
        "Held-out quality (explained variance; CE loss recovered with the SAE spliced in through the patching "
        "API, against zero ablation):",
        "",
        metrics_markdown(metrics),
    )
