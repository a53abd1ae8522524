"""The contenders of ``sae_training.py``: three multi-site TopK trainers fed from one activation cache.

* `harvest`: one forward pass over corpus chunks (flowsteer's `ActivationRounds`: position 0 and
  attention sinks left out, tokens shuffled) gives ``{site: [tokens, d]}``, raw (unscaled) activations.
* `batch_stream`: the order of cached tokens every trainer sees, batch by batch: flowsteer's own order
  (`flowsteer.saes.activations.CachedRounds`: consecutive rounds, each reshuffled for every pass).
* `train_flowsteer`: `flowsteer.saes.train_saes` with ``activations=`` the cache (the whole trainer).
* `train_sparsify`: EleutherAI sparsify's own `sparsify.Trainer.fit` (its `SparseCoder`, optimizer,
  dead-latent bookkeeping and loss), with the language model replaced by `ActivationReplay`, a stand-in
  `transformers` model whose forward pass replays cached activations through identity modules at the
  hook points; each dataset row is one batch of cache indices (``batch_size`` = 1 row). Its final
  checkpoint write is switched off (flowsteer's contender writes nothing either), and
  ``torch.set_float32_matmul_precision``, which ``fit`` sets to "high", is put back afterwards.
* `train_sae_lens`: sae-lens's `MultiSAETrainer` (what `MultiSAETrainingRunner` drives) with the
  cache as its multi-hook data provider; the first ``n_batches_for_norm_estimate`` batches of the stream
  are also used, untrained, for its input-norm estimate, as its runner does with fresh batches.

Each returns sae-lens inference-compatible SAEs keyed by `Site`, for the same quality metrics.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import tempfile

import torch
from sae_lens import TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from flowsteer.saes import SAETrainingConfig, train_saes
from flowsteer.saes.activations import ActivationRounds, CachedRounds
from flowsteer.sites import Site

CONTENDERS = ("flowsteer", "sparsify", "sparsify-adam", "sae-lens-multi")


def harvest(model, sites: list[Site], chunks: Tensor, n_tokens: int, config: SAETrainingConfig, seed: int = 0):
    """``{site: [n_tokens, d]}`` raw activations (sinks left out, shuffled) from one forward pass per batch."""
    per_chunk = chunks.shape[1] - 1
    spare = 1.05  # attention sinks left out (about 1% of chunks in SmolLM2) must not leave the cache short
    rounds = ActivationRounds(
        model, sites, chunks, round_tokens=math.ceil(n_tokens * spare / per_chunk) * per_chunk,
        lm_batch=config.lm_batch, seed=seed, max_norm_ratio=config.max_norm_ratio,
        autocast_dtype=torch.bfloat16 if config.harvest_dtype == "bfloat16" else None,
    )
    activations, order = rounds[0]
    if order.numel() < n_tokens:
        raise RuntimeError(f"harvest kept {order.numel()} tokens, fewer than the {n_tokens} asked for")
    keep = order[:n_tokens]
    return {site: activations[i, keep].contiguous() for i, site in enumerate(sites)}


def batch_stream(n_tokens: int, config: SAETrainingConfig, n_sites: int, d_in: int) -> Tensor:
    """``[steps, batch_size]`` cache indices, in the order flowsteer's `train_saes` visits them."""
    rounds = CachedRounds([torch.empty(n_tokens, 0)], round_tokens=config.round_size(n_sites, d_in), seed=config.seed)
    batches: list[Tensor] = []
    for round_index in itertools.count():
        window = rounds.window(round_index)
        order = rounds[round_index][1] + window.start
        for pass_index in range(config.passes):
            shuffled = rounds.reshuffled(order, round_index, pass_index)
            for start in range(0, shuffled.numel() - config.batch_size + 1, config.batch_size):
                batches.append(shuffled[start : start + config.batch_size])
                if len(batches) == config.total_steps:
                    return torch.stack(batches)
    raise AssertionError("unreachable")


def train_flowsteer(model, cache: dict[Site, Tensor], config: SAETrainingConfig, stream: Tensor) -> dict:
    del stream  # train_saes draws the same order itself
    bank = train_saes(model, list(cache), config, activations=cache, progress=False)
    return dict(bank.items())


# --- sparsify ------------------------------------------------------------------------------------


class ReplayConfig(PretrainedConfig):
    model_type = "flowsteer-activation-replay"


class ActivationReplay(PreTrainedModel):
    """A stand-in language model for `sparsify.Trainer`: ``forward(input_ids)`` passes
    ``cache[name][input_ids]`` through the identity module ``sites.<name>`` for every cached site, so
    sparsify's forward hooks receive cached activations exactly as they would a model's."""

    config_class = ReplayConfig
    base_model_prefix = "replay"  # no such attribute: `base_model` is the model itself

    def __init__(self, cache: dict[str, Tensor]):
        super().__init__(ReplayConfig())
        self.sites = nn.ModuleDict({name: nn.Identity() for name in cache})
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device and dtype
        self.cache = cache

    def forward(self, input_ids: Tensor, **_):
        for name, module in self.sites.items():
            module(self.cache[name][input_ids])


def _module_name(site: Site) -> str:
    return str(site).replace("/", "_")


def sparsify_learning_rate(config: SAETrainingConfig, optimizer: str) -> float | None:
    """None (sparsify's own default: ``5e-3 / sqrt(d_sae / 2**14)``) for signum; flowsteer's for Adam."""
    return None if optimizer == "signum" else config.lr


def train_sparsify(model, cache: dict[Site, Tensor], config: SAETrainingConfig, stream: Tensor,
                   optimizer: str = "signum") -> dict:
    import datasets
    from sparsify import SaeConfig, TrainConfig, Trainer

    del model
    names = {site: _module_name(site) for site in cache}
    replay = ActivationReplay({names[site]: acts for site, acts in cache.items()})
    dataset = datasets.Dataset.from_dict({"input_ids": stream.tolist()}).with_format("torch")
    cfg = TrainConfig(
        SaeConfig(num_latents=config.d_sae, k=config.k),
        batch_size=1, loss_fn="fvu", optimizer=optimizer, lr=sparsify_learning_rate(config, optimizer),
        lr_warmup_steps=config.warmup_steps, auxk_alpha=config.aux_coefficient,
        dead_feature_threshold=config.dead_window, hookpoints=[f"sites.{n}" for n in names.values()],
        init_seeds=[config.seed], save_every=10**12, log_to_wandb=False,
    )
    precision = torch.get_float32_matmul_precision()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        cfg.save_dir = tmp
        trainer = Trainer(cfg, dataset, replay)
        trainer.save = lambda: None  # the final checkpoint write
        try:
            trainer.fit()
        finally:
            torch.set_float32_matmul_precision(precision)
    for opt in trainer.optimizers:  # schedule-free: evaluate the averaged weights, as its checkpoints do
        if hasattr(opt, "eval"):
            opt.eval()
    return {site: sparsify_to_sae_lens(trainer.saes[f"sites.{names[site]}"], site) for site in cache}


@torch.no_grad()
def sparsify_to_sae_lens(coder, site: Site) -> TopKSAE:
    """A sparsify `SparseCoder` (TopK, no skip connection) as the sae-lens `TopKSAE` computing the same map."""
    if coder.cfg.activation != "topk" or coder.W_skip is not None or coder.cfg.transcode:
        raise ValueError("only plain TopK sparsify autoencoders convert")
    cfg = TopKSAEConfig(d_in=coder.d_in, d_sae=coder.num_latents, k=coder.cfg.k, dtype="float32", device="cpu",
                        apply_b_dec_to_input=True, normalize_activations="none", rescale_acts_by_decoder_norm=False,
                        metadata=SAEMetadata(hook_name=site.hook_name))
    sae = TopKSAE(cfg)
    sae.load_state_dict({"W_enc": coder.encoder.weight.T.float().contiguous(), "b_enc": coder.encoder.bias.float(),
                         "W_dec": coder.W_dec.float().clone(), "b_dec": coder.b_dec.float().clone()})
    return sae


# --- sae-lens ------------------------------------------------------------------------------------

NORM_ESTIMATE_BATCHES = 10


def train_sae_lens(model, cache: dict[Site, Tensor], config: SAETrainingConfig, stream: Tensor) -> dict:
    from sae_lens import LoggingConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    del model
    steps = len(stream)
    norm_batches = min(NORM_ESTIMATE_BATCHES, steps)
    torch.manual_seed(config.seed)
    saes = {str(site): TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=acts.shape[1], d_sae=config.d_sae, k=config.k, aux_loss_coefficient=config.aux_coefficient,
        normalize_activations="expected_average_only_in", device="cpu")) for site, acts in cache.items()}
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=config.lr, lr_end=config.lr / 10, lr_warm_up_steps=config.warmup_steps,
        lr_decay_steps=int(config.decay_fraction * steps), device="cpu",
        dead_feature_window=max(1, config.dead_window // config.batch_size),
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=norm_batches,
    )
    hooks = {str(site): site.hook_name for site in cache}
    batches = itertools.chain(stream[:norm_batches], stream)
    provider = ({site.hook_name: acts[rows] for site, acts in cache.items()} for rows in batches)
    trained = MultiSAETrainer(trainer_cfg, saes, hooks, provider).fit()
    return {Site.parse(name): sae for name, sae in trained.items()}


TRAINERS = {
    "flowsteer": train_flowsteer,
    "sparsify": train_sparsify,
    "sparsify-adam": lambda model, cache, config, stream: train_sparsify(model, cache, config, stream, "adam"),
    "sae-lens-multi": train_sae_lens,
}
