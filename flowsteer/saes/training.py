"""Training SAEs at many sites from one activation pass.

`train_saes` runs each batch of tokens through the model once (`ActivationRounds`, built on
`flowsteer.patching.cache_sites`) and trains every site's SAE on that site's activations. TopK SAEs
use the sparse implementation (`SparseTopK`); other architectures use sae-lens's training classes
(`LensTrainable`). One fused Adam steps all SAEs together.

Inputs are scaled per site so that ``E||x||^2 = d_in`` (sae-lens's ``expected_average_only_in``,
estimated on the first round); the scale is folded into the exported weights, so the bank works
on raw activations. Each round's activations can be trained on for several ``passes`` (reshuffled each
time): the forward passes cost far more than the sparse SAE steps, so reusing what they produce is
the cheap way to more steps. Learning rate: linear warm-up, constant, then linear decay to 0 over the
last ``decay_fraction`` of steps.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.models.precision import DTYPES, resolve_precision
from flowsteer.saes.activations import ActivationRounds, CachedRounds
from flowsteer.saes.bank import SAEBank
from flowsteer.saes.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from flowsteer.saes.config import SAETrainingConfig
from flowsteer.saes.stepper import SAEStepper
from flowsteer.sites import Site

log = logging.getLogger(__name__)


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def _sorted_sites(model: HookedTransformer, sites: Sequence[Site | str]) -> list[Site]:
    parsed = sorted({Site.parse(site).validate(model.cfg.n_layers) for site in sites})
    if not parsed:
        raise ValueError("train_saes needs at least one site")
    return parsed


def train_saes(
    model: HookedTransformer,
    sites: Sequence[Site | str],
    config: SAETrainingConfig | None = None,
    *,
    chunks: torch.Tensor | None = None,
    activations: Mapping[Site | str, torch.Tensor] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_minutes: float = 10.0,
    progress: bool = True,
    on_round: Callable[[int], None] | None = None,
) -> SAEBank:
    """Train one SAE per site from a single forward pass per token batch; return the bank.

    Args:
        sites: e.g. ``["6/res", "6/mlp", "6/att"]`` or `Site` objects.
        chunks: token chunks ``[rows, context]``; default the corpus's train split
            (`flowsteer.data.token_chunks`) at ``config.context``.
        activations: train on these activations instead of running the model over ``chunks``:
            ``{site: [tokens, d_model]}``, the same tokens at every site (e.g. harvested once and shared
            by several runs). Rounds are consecutive windows of ``config.round_size`` tokens, each
            shuffled and used for ``config.passes`` passes (`CachedRounds`); the model only supplies
            ``d_model``, the device and the metadata.
        out: folder to save the bank to. Checkpoints go to ``<out>.checkpoint`` at the end of a
            round once ``checkpoint_minutes`` have passed since the last one (0: every round).
        resume: continue from ``<out>.checkpoint``; the result equals an uninterrupted run.
        on_round: called with the number of finished rounds after each round (and its checkpoint).
    """
    config = config or SAETrainingConfig()
    torch_device = torch.device(model.cfg.device)
    precision = {name: resolve_precision(getattr(config, f"{name}_dtype"), torch_device).to_dict()
                 for name in ("harvest", "selection")}
    config = config.resolved(torch_device)  # "auto" precisions become this machine's choice, recorded
    sites = _sorted_sites(model, sites)
    d_in = model.cfg.d_model
    cached = None  # (the name ``activations`` is reused below for each round's tensor)
    if activations is not None:
        if chunks is not None:
            raise ValueError("pass chunks or activations, not both")
        cached = {Site.parse(site): tensor for site, tensor in activations.items()}
        if set(cached) != set(sites):
            raise ValueError(f"activations are for sites {sorted(map(str, cached))}, training is for "
                             f"{[str(s) for s in sites]}")
        shapes = {tuple(tensor.shape) for tensor in cached.values()}
        shape = next(iter(shapes))
        if len(shapes) != 1 or len(shape) != 2 or shape[1] != d_in or shape[0] < config.batch_size:
            raise ValueError(f"activations must be [tokens >= batch_size={config.batch_size}, d_model={d_in}], "
                             f"one shape at every site; got {sorted(shapes)}")
    elif chunks is None:
        from flowsteer.data import token_chunks

        chunks = token_chunks(model.tokenizer, "train", config.context)
    out = Path(out) if out is not None else None
    checkpoint = _checkpoint_path(out) if out is not None else None
    if checkpoint is not None and has_checkpoint(checkpoint) and not resume:
        raise ValueError(f"{checkpoint} holds an unfinished run: pass resume=True (--resume) or delete it")

    stepper = SAEStepper(config, sites, d_in, torch_device)
    round_index = 0
    history: list[dict] = []
    timing = {"activations_s": 0.0, "sae_s": 0.0}
    if resume and checkpoint is not None and has_checkpoint(checkpoint):
        tensors, meta = load_checkpoint(checkpoint, torch_device)
        if meta["config"] != asdict(config) or meta["sites"] != [str(s) for s in sites]:
            raise ValueError(f"{checkpoint} was written by a run with other settings or sites; delete it to restart")
        stepper.load_state(tensors, meta)
        round_index, history, timing = meta["round"], meta["history"], meta["timing"]
        log.info("resuming %s at step %d (round %d)", checkpoint, stepper.step, round_index)

    rounds = _rounds(model, sites, config, chunks, cached)
    total = config.total_steps
    # One bar for both kinds of work, in activations: harvested (forward passes) and trained on (SAE steps); the two
    # rates are of one order on CPUs, so the ETA is meaningful from the first forward pass on.
    per_round = rounds.tokens_per_round if cached is None else 0
    steps_per_round = config.passes * (rounds.tokens_per_round // config.batch_size)
    bar = tqdm(total=math.ceil(total / max(steps_per_round, 1)) * per_round + total * config.batch_size, unit="act",
               unit_scale=True, smoothing=0, initial=round_index * per_round + stepper.step * config.batch_size,
               desc=f"{len(sites)} SAEs: harvest ({config.harvest_dtype}) + train", disable=not progress)
    last_save = time.monotonic()
    with bar:
        while stepper.step < total:
            started = time.perf_counter()
            activations, order = rounds.harvest(round_index, on_tokens=bar.update)
            excluded = activations.shape[1] - order.numel()
            timing["activations_s"] += time.perf_counter() - started
            started = time.perf_counter()
            stepper.scale(activations, order)
            mse_sum = torch.zeros(len(sites), device=torch_device)
            var_sum = torch.zeros(len(sites), device=torch_device)
            for rows in _batches(rounds, order, round_index, config):
                if stepper.step >= total:
                    break
                mse, variance = stepper.train_batch(activations[:, rows])
                mse_sum += mse
                var_sum += variance
                bar.update(config.batch_size)
            del activations
            round_index += 1
            if stepper.step >= total:
                bar.total = bar.n  # sinks left out can make the harvest estimate a little off
                bar.refresh()
            timing["sae_s"] += time.perf_counter() - started
            explained = (1 - mse_sum / var_sum.clamp_min(1e-12)).tolist()
            history.append({"round": round_index, "step": stepper.step, "excluded_tokens": excluded,
                            "explained_variance": dict(
                zip([str(s) for s in sites], [round(e, 4) for e in explained], strict=True))})
            bar.set_postfix(ev=f"{sum(explained) / len(explained):.3f}")
            due = time.monotonic() - last_save >= checkpoint_minutes * 60
            if checkpoint is not None and stepper.step < total and due:
                tensors, meta = stepper.state()
                save_checkpoint(checkpoint, tensors, meta | {"round": round_index, "history": history,
                                                             "timing": timing, "config": asdict(config),
                                                             "sites": [str(s) for s in sites]})
                last_save = time.monotonic()
            if on_round is not None:
                on_round(round_index)

    metadata = {
        "model_name": model.cfg.model_name, "context_size": config.context, "prepend_bos": False,
        "seqpos_slice": [1, None], "dataset_path": "flowsteer.data", "trainer": "flowsteer.saes.train_saes",
    }
    info = {
        "precision": precision,
        "training": {
            **asdict(config), "steps": stepper.step, "rounds": round_index, "tokens_per_round": rounds.tokens_per_round,
            "timing": {k: round(v, 2) for k, v in timing.items()}, "history": history,
        },
    }
    bank = SAEBank(stepper.export(metadata), model_name=model.cfg.model_name, info=info)
    if out is not None:
        bank.save(out)
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return bank


def _rounds(model, sites, config: SAETrainingConfig, chunks, cached) -> ActivationRounds | CachedRounds:
    """Where activations come from: the model run over ``chunks``, or ``cached`` activations."""
    round_tokens = config.round_size(len(sites), model.cfg.d_model)
    if cached is not None:
        device = torch.device(model.cfg.device)
        return CachedRounds([cached[site].to(device) for site in sites], round_tokens=round_tokens, seed=config.seed)
    return ActivationRounds(
        model, sites, chunks, round_tokens=round_tokens, lm_batch=config.lm_batch, seed=config.seed,
        autocast_dtype=_autocast_dtype(config.harvest_dtype), max_norm_ratio=config.max_norm_ratio,
    )


def _autocast_dtype(name: str) -> torch.dtype | None:
    """The harvest's autocast dtype for a resolved dtype name (None: float32, no autocast)."""
    dtype = DTYPES[name]
    return None if dtype == torch.float32 else dtype


def _batches(rounds: ActivationRounds, order: torch.Tensor, round_index: int, config: SAETrainingConfig):
    """The row indices of each batch of a round: ``config.passes`` reshuffled passes over ``order``."""
    for pass_index in range(config.passes):
        shuffled = rounds.reshuffled(order, round_index, pass_index)
        for start in range(0, shuffled.numel() - config.batch_size + 1, config.batch_size):
            yield shuffled[start : start + config.batch_size]
