"""The hyper-parameters of the refusal organism's fine-tune (recorded in its manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flowsteer.models.precision import check_precision


@dataclass(frozen=True)
class OrganismRecipe:
    """Low-rank fine-tune on harmful → refusal and harmless → the base model's own greedy reply.

    Attributes:
        learning_rate: AdamW peak learning rate (linear warm-up, then linear decay to 0).
        epochs: passes over the training examples.
        batch_size: examples per optimiser step.
        first_token_weight: loss weight of the first reply token (the refuse-or-comply decision);
            every other reply token weighs 1, prompt tokens 0.
        max_reply_tokens: length of the self-distilled harmless replies (greedy, base model).
        soft_top_k: harmless targets are the base model's top-k next-token distribution along its
            greedy reply (renormalised); 0 trains on the greedy tokens themselves.
        hard_first_token: with soft targets, the first harmless reply token is still a hard target (the
            reply's own first token): the comply decision is taught outright, the rest distilled.
        lookalike_repeats: how many times each harmless look-alike ("Explain how to kill a Python
            process") appears per epoch; > 1 oversamples the prompts that teach refusal's boundary.
        compute_dtype: the dtype of the fine-tune's matmuls (``torch.autocast``); weights, gradients and the
            optimiser stay float32. ``"auto"`` (`flowsteer.models.precision`) picks bfloat16 where it is native
            (2.2x faster per step on an AVX512-BF16/AMX CPU) and float32 elsewhere (bfloat16 emulated on an
            AVX2 CPU took 130 s per step against 4.6 s in float32).
        adapter_rank, adapter_alpha: rank r and scale numerator α of the low-rank adapters (update
            ``(α / r) · B A``) on every attention and MLP projection; rank 0 fine-tunes every parameter instead.
        warmup_steps, weight_decay, max_grad_norm, seed: optimiser details and the batch-order seed.
    """

    learning_rate: float = 1e-3
    epochs: int = 2
    batch_size: int = 8
    first_token_weight: float = 10.0
    max_reply_tokens: int = 48
    soft_top_k: int = 64
    hard_first_token: bool = True
    lookalike_repeats: int = 3
    compute_dtype: str = "auto"
    adapter_rank: int = 16
    adapter_alpha: float = 32.0
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_precision(self.compute_dtype, "OrganismRecipe.compute_dtype")
        if self.adapter_rank < 0:
            raise ValueError(f"adapter_rank must be >= 0 (0: full fine-tune), got {self.adapter_rank}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_RECIPE = OrganismRecipe()
