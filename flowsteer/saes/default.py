"""`default_bank`: the bank a demo or analysis needs, trained once and then reused from the user cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from transformer_lens import HookedTransformer

from flowsteer.paths import cache_dir, write_json
from flowsteer.saes.bank import SAEBank
from flowsteer.saes.config import SAETrainingConfig
from flowsteer.saes.metrics import evaluate_bank, metrics_markdown
from flowsteer.saes.training import train_saes
from flowsteer.sites import Site

log = logging.getLogger(__name__)

DEFAULT_LAYERS = range(8, 13)
DEFAULT_KINDS = ("res", "mlp", "att")
DEFAULT_CONFIG = SAETrainingConfig(tokens=100_000, passes=4)


def bank_cache_path(model: HookedTransformer, sites: Sequence[Site], config: SAETrainingConfig) -> Path:
    """``cache_dir("saes")/<model>/<hash of sites and settings>``: one folder per distinct bank."""
    config = config.resolved(model.cfg.device)  # a bank harvested in bfloat16 is not the float32 one
    key = json.dumps({"sites": [str(s) for s in sites], "config": asdict(config), "corpus": "flowsteer.data v1"})
    name = str(model.cfg.model_name).replace("/", "--")
    return cache_dir("saes", name) / hashlib.sha256(key.encode()).hexdigest()[:16]


def default_bank(
    model: HookedTransformer,
    layers: Sequence[int] = DEFAULT_LAYERS,
    kinds: Sequence[str] = DEFAULT_KINDS,
    *,
    config: SAETrainingConfig = DEFAULT_CONFIG,
    evaluate: bool = True,
    progress: bool = True,
) -> SAEBank:
    """SAEs at ``kinds`` x ``layers`` of ``model``: loaded from the user cache, else trained and cached.

    The defaults (TopK, width 2304, k=32, 100k tokens x 4 passes, res/mlp/att at layers 8-12) are sized to train and
    evaluate within 6 minutes on 2 CPU cores (measured in docs/saes.md). With ``evaluate`` the first build also writes
    ``metrics.json`` / ``metrics.md`` beside the bank; ``bank.info["metrics"]`` holds them on reload.
    """
    sites = sorted({Site.parse(f"{layer}/{kind}").validate(model.cfg.n_layers) for layer in layers for kind in kinds})
    path = bank_cache_path(model, sites, config)
    if (path / "bank.json").is_file():
        bank = SAEBank.load(path, model)
    else:
        log.info("training %d SAEs for %s (once; cached in %s)", len(sites), model.cfg.model_name, path)
        bank = train_saes(model, sites, config, out=path, resume=True, progress=progress)
        if evaluate:
            results = evaluate_bank(model, bank, eval_tokens=8_192, ce_tokens=512, progress=progress)
            write_json(path / "metrics.json", results)
            (path / "metrics.md").write_text(metrics_markdown(results))
    metrics = path / "metrics.json"
    if metrics.is_file():
        bank.info["metrics"] = json.loads(metrics.read_text())
    bank.info["path"] = str(path)
    return bank
