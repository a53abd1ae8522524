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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from sae_lens import (
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.models.precision import DTYPES, check_precision, resolve_precision
from flowsteer.saes.activations import ActivationRounds, CachedRounds
from flowsteer.saes.bank import SAEBank
from flowsteer.saes.checkpoint import (
    has_checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
)
from flowsteer.saes.trainable import LensTrainable, SparseTopK
from flowsteer.sites import Site

log = logging.getLogger(__name__)

ARCHITECTURES = ("topk", "jumprelu", "standard")


@dataclass(frozen=True)
class SAETrainingConfig:
    """Settings of one multi-site training run (all JSON-able; stored with checkpoints and banks).

    Attributes:
        architecture: ``topk`` (sparse TopK + AuxK), ``jumprelu`` or ``standard`` (ReLU + L1).
        d_sae, k: latents per SAE; active latents per token (TopK; JumpReLU's target L0).
        tokens: activations harvested per site (distinct tokens; each is trained on ``passes`` times).
        passes: passes over each round's activations, reshuffled each pass; SAE steps =
            ``tokens * passes / batch_size``.
        batch_size: activations per optimizer step.
        dead_window: a latent that has not fired for this many tokens is dead (AuxK trains it).
        sparsity_coefficient: JumpReLU's L0 / standard's L1 coefficient.
        context, lm_batch: chunk length and chunks per forward pass.
        round_tokens: activations per site held in memory and shuffled together; None: up to
            65,536 (never more than the run needs) within ``memory_gb`` for all sites.
        selection_dtype: dtype of the dense product that picks the top k; ``"auto"`` (bfloat16 where it is
            native, float32 elsewhere: `flowsteer.models.precision`), ``"bfloat16"`` or ``"float32"``.
        harvest_dtype: dtype of the model's matmuls while harvesting activations (``torch.autocast``), same
            choices: ``bfloat16`` runs the forward pass about 3x faster where it is native and about 40x
            slower where it is emulated; activations are stored and the SAEs trained in float32 either way.
        max_norm_ratio: tokens whose residual-stream norm exceeds this multiple of the layer's median
            (attention sinks after position 0; `flowsteer.saes.activations.sink_tokens`) are not trained
            on; None trains on every token.
    """

    architecture: str = "topk"
    d_sae: int = 2304
    k: int = 32
    tokens: int = 300_000
    passes: int = 4
    batch_size: int = 1024
    lr: float = 2e-3
    warmup_steps: int = 10
    decay_fraction: float = 0.2
    aux_coefficient: float = 1.0
    dead_window: int = 16_384
    sparsity_coefficient: float = 1.0
    context: int = 128
    lm_batch: int = 32
    round_tokens: int | None = None
    memory_gb: float = 2.0
    selection_dtype: str = "auto"
    harvest_dtype: str = "auto"
    max_norm_ratio: float | None = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        for name in ("selection_dtype", "harvest_dtype"):
            check_precision(getattr(self, name), f"SAETrainingConfig.{name}")
        if self.passes < 1:
            raise ValueError(f"passes must be at least 1, got {self.passes}")
        if self.tokens < self.batch_size:
            raise ValueError(f"tokens ({self.tokens}) must be at least one batch ({self.batch_size})")

    def resolved(self, device: torch.device | str) -> SAETrainingConfig:
        """This config with ``"auto"`` precisions replaced by the dtype names chosen for ``device``."""
        return replace(
            self,
            selection_dtype=resolve_precision(self.selection_dtype, device).name,
            harvest_dtype=resolve_precision(self.harvest_dtype, device).name,
        )

    @property
    def total_steps(self) -> int:
        return self.tokens * self.passes // self.batch_size

    def learning_rate(self, step: int) -> float:
        """Warm-up, constant, linear decay to 0 over the last ``decay_fraction`` of steps."""
        total = self.total_steps
        decay_start = total - int(self.decay_fraction * total)
        factor = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        if step >= decay_start:
            factor *= (total - step) / max(total - decay_start, 1)
        return self.lr * factor

    def round_size(self, n_sites: int, d_in: int) -> int:
        """Activations per site per round: ``round_tokens``, else at most 64 k that fit ``memory_gb``."""
        if self.round_tokens is not None:
            return max(self.round_tokens, self.batch_size)
        fits = int(self.memory_gb * 2**30 / (4 * n_sites * d_in))
        size = min(fits, 65_536, self.tokens)
        return max(self.batch_size, size // self.batch_size * self.batch_size)


def _site_seed(seed: int, site: Site) -> int:
    return seed * 1_000_003 + site.order[0] * 16 + site.order[1]


def build_trainable(config: SAETrainingConfig, d_in: int, site: Site, device: torch.device | str):
    """A fresh SAE for ``site``, initialised from a generator seeded by ``(config.seed, site)``."""
    seed = _site_seed(config.seed, site)
    if config.architecture == "topk":
        generator = torch.Generator().manual_seed(seed)
        return SparseTopK(
            d_in, config.d_sae, config.k, aux_coefficient=config.aux_coefficient,
            selection_dtype=DTYPES[config.resolved(device).selection_dtype], generator=generator, device=device,
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if config.architecture == "jumprelu":
            cfg = JumpReLUTrainingSAEConfig(
                d_in=d_in, d_sae=config.d_sae, device=str(device), l0_coefficient=config.sparsity_coefficient,
                jumprelu_sparsity_loss_mode="quadratic", target_l0=float(config.k),
            )
            return LensTrainable(JumpReLUTrainingSAE(cfg))
        cfg = StandardTrainingSAEConfig(d_in=d_in, d_sae=config.d_sae, device=str(device),
                                        l1_coefficient=config.sparsity_coefficient)
        return LensTrainable(StandardTrainingSAE(cfg))


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
    config: SAETrainingConfig = SAETrainingConfig(),
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

    trainables = {site: build_trainable(config, d_in, site, torch_device) for site in sites}
    params = [p for trainable in trainables.values() for p in trainable.parameters()]
    fused = torch_device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(params, lr=config.lr, fused=fused)
    since_fired = torch.zeros(len(sites), config.d_sae, dtype=torch.long, device=torch_device)
    scales: torch.Tensor | None = None
    step = round_index = 0
    history: list[dict] = []
    timing = {"activations_s": 0.0, "sae_s": 0.0}
    if resume and checkpoint is not None and has_checkpoint(checkpoint):
        tensors, meta = load_checkpoint(checkpoint, torch_device)
        if meta["config"] != asdict(config) or meta["sites"] != [str(s) for s in sites]:
            raise ValueError(f"{checkpoint} was written by a run with other settings or sites; delete it to restart")
        for site, trainable in trainables.items():
            trainable.load_state_dict({k.split("/", 2)[2]: v for k, v in tensors.items() if k.startswith(f"{site}/")})
            if hasattr(trainable, "step_index"):
                trainable.step_index = meta["step"]
        optimizer_from_flat(optimizer, tensors, meta["optimizer"])
        since_fired, scales = tensors["since_fired"], tensors["scales"]
        step, round_index, history, timing = meta["step"], meta["round"], meta["history"], meta["timing"]
        log.info("resuming %s at step %d (round %d)", checkpoint, step, round_index)

    round_tokens = config.round_size(len(sites), d_in)
    if cached is not None:
        rounds = CachedRounds([cached[site].to(torch_device) for site in sites], round_tokens=round_tokens,
                              seed=config.seed)
    else:
        rounds = ActivationRounds(
            model, sites, chunks, round_tokens=round_tokens, lm_batch=config.lm_batch, seed=config.seed,
            autocast_dtype=_autocast_dtype(config.harvest_dtype), max_norm_ratio=config.max_norm_ratio,
        )
    total = config.total_steps
    # One bar for both kinds of work, in activations: harvested (forward passes) and trained on (SAE steps); the two
    # rates are of one order on CPUs, so the ETA is meaningful from the first forward pass on.
    steps_per_round = config.passes * (rounds.tokens_per_round // config.batch_size)
    harvest_total = 0 if cached is not None else math.ceil(total / max(steps_per_round, 1)) * rounds.tokens_per_round
    bar = tqdm(total=harvest_total + total * config.batch_size, unit="act", unit_scale=True, smoothing=0,
               initial=(0 if cached is not None else round_index * rounds.tokens_per_round) + step * config.batch_size,
               desc=f"{len(sites)} SAEs: harvest ({config.harvest_dtype}) + train", disable=not progress)
    last_save = time.monotonic()
    with bar:
        while step < total:
            started = time.perf_counter()
            activations, order = rounds.harvest(round_index, on_tokens=bar.update)
            excluded = activations.shape[1] - order.numel()
            timing["activations_s"] += time.perf_counter() - started
            started = time.perf_counter()
            if scales is None:
                scales = _estimate_scales(activations, order)
                for i, trainable in enumerate(trainables.values()):
                    trainable.init_from_data(activations[i, order[: 64 * config.batch_size]] * scales[i])
            activations *= scales[:, None, None]
            mse_sum = torch.zeros(len(sites), device=torch_device)
            var_sum = torch.zeros(len(sites), device=torch_device)
            for rows in _batches(rounds, order, round_index, config):
                if step >= total:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate(step)
                for i, trainable in enumerate(trainables.values()):
                    x = activations[i, rows]
                    loss, stats = trainable.loss(x, since_fired[i] >= config.dead_window)
                    loss.backward()
                    since_fired[i] += config.batch_size
                    since_fired[i, stats["fired"]] = 0
                    mse_sum[i] += stats["mse"]
                    var_sum[i] += (x - x.mean(0)).pow(2).sum(-1).mean()
                for trainable in trainables.values():
                    trainable.before_step()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                for trainable in trainables.values():
                    trainable.after_step()
                step += 1
                bar.update(config.batch_size)
            del activations
            round_index += 1
            if step >= total:
                bar.total = bar.n  # sinks left out can make the harvest estimate a little off
                bar.refresh()
            timing["sae_s"] += time.perf_counter() - started
            explained = (1 - mse_sum / var_sum.clamp_min(1e-12)).tolist()
            history.append({"round": round_index, "step": step, "excluded_tokens": excluded,
                            "explained_variance": dict(
                zip([str(s) for s in sites], [round(e, 4) for e in explained], strict=True))})
            bar.set_postfix(ev=f"{sum(explained) / len(explained):.3f}")
            due = time.monotonic() - last_save >= checkpoint_minutes * 60
            if checkpoint is not None and step < total and due:
                _save(checkpoint, trainables, optimizer, since_fired, scales, step, round_index, history, timing,
                      config, sites)
                last_save = time.monotonic()
            if on_round is not None:
                on_round(round_index)

    metadata = {
        "model_name": model.cfg.model_name, "context_size": config.context, "prepend_bos": False,
        "seqpos_slice": [1, None], "dataset_path": "flowsteer.data", "trainer": "flowsteer.saes.train_saes",
    }
    saes = {
        site: trainable.export(float(scales[i]), SAEMetadata(hook_name=site.hook_name, **metadata))
        for i, (site, trainable) in enumerate(trainables.items())
    }
    info = {
        "precision": precision,
        "training": {
            **asdict(config), "steps": step, "rounds": round_index, "tokens_per_round": rounds.tokens_per_round,
            "timing": {k: round(v, 2) for k, v in timing.items()}, "history": history,
        },
    }
    bank = SAEBank(saes, model_name=model.cfg.model_name, info=info)
    if out is not None:
        bank.save(out)
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return bank


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


def _estimate_scales(activations: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Per site, ``sqrt(d_in) / mean norm`` over the tokens trained on (sae-lens's estimate form)."""
    d_in = activations.shape[-1]
    return math.sqrt(d_in) / activations.norm(dim=-1)[:, order].mean(dim=1)


def _save(path, trainables, optimizer, since_fired, scales, step, round_index, history, timing, config, sites):
    tensors, optimizer_meta = optimizer_to_flat(optimizer)
    for site, trainable in trainables.items():
        for name, value in trainable.state_dict().items():
            tensors[f"{site}/{name}"] = value
    tensors["since_fired"], tensors["scales"] = since_fired, scales
    meta = {"step": step, "round": round_index, "history": history, "timing": timing, "config": asdict(config),
            "sites": [str(s) for s in sites], "optimizer": optimizer_meta}
    save_checkpoint(path, tensors, meta)
