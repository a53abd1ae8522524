"""`SAETrainingConfig`: the settings of one multi-site SAE training run (JSON-able; stored with checkpoints and
banks), its learning-rate schedule and its round size."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from flowsteer.models.precision import check_precision, resolve_precision

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
