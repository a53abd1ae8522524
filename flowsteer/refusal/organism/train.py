"""Fine-tuning a Hugging Face causal LM on `SFTExample`s, loss on reply tokens only.

Training runs on the Hugging Face model, not on a flowsteer `HookedTransformer`: models from
`load_model` are frozen and re-laid out for inference (`flowsteer.models.prepare`), and stay so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowsteer.models.precision import resolve_precision
from flowsteer.refusal.organism.recipe import OrganismRecipe
from flowsteer.refusal.organism.targets import SFTExample


@dataclass(frozen=True)
class Batch:
    """Right-padded tokens and, for every next-token prediction, its loss weight and target distribution.

    Index t of ``weights``, ``targets`` and ``target_probs`` belongs to predicting token t+1: weight 0 on
    prompt and padding, ``first_token_weight`` on the first reply token, 1 on the rest. A hard target is
    its token with probability 1 in slot 0.
    """

    ids: Int[Tensor, "batch pos"]
    mask: Int[Tensor, "batch pos"]
    weights: Float[Tensor, "batch next"]
    targets: Int[Tensor, "batch next k"]
    target_probs: Float[Tensor, "batch next k"]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(getattr(self, field.name).to(device) for field in fields(self)))


def collate(examples: Sequence[SFTExample], pad_id: int, first_token_weight: float) -> Batch:
    """A right-padded `Batch` of ``examples`` (hard or soft targets)."""
    width = max(len(e.prompt_ids) + len(e.reply_ids) for e in examples)
    k = max((e.soft_ids.shape[1] for e in examples if e.soft_ids is not None), default=1)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weights = torch.zeros((len(examples), width - 1))
    targets = torch.zeros((len(examples), width - 1, k), dtype=torch.long)
    probs = torch.zeros((len(examples), width - 1, k))
    for row, example in enumerate(examples):
        sequence = list(example.prompt_ids) + list(example.reply_ids)
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        first, end = len(example.prompt_ids) - 1, len(sequence) - 1  # the predictions of the reply tokens
        weights[row, first:end] = 1.0
        weights[row, first] = first_token_weight
        if example.soft_ids is None:
            targets[row, first:end, 0] = torch.tensor(example.reply_ids)
            probs[row, first:end, 0] = 1.0
        else:
            targets[row, first:end, : example.soft_ids.shape[1]] = example.soft_ids
            probs[row, first:end, : example.soft_ids.shape[1]] = example.soft_probs
    return Batch(ids, mask, weights, targets, probs)


def weighted_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Σ w·CE(target distribution, model) / Σ w over next-token predictions, unembedding only the
    positions with w > 0 (the reply), which saves the vocabulary-sized matmul on every prompt token."""
    hidden = model.get_decoder()(input_ids=batch.ids, attention_mask=batch.mask).last_hidden_state[:, :-1]
    used = batch.weights > 0
    log_probs = model.get_output_embeddings()(hidden[used]).float().log_softmax(-1)
    per_token = -(batch.target_probs[used] * log_probs.gather(-1, batch.targets[used])).sum(-1)
    return (per_token * batch.weights[used]).sum() / batch.weights[used].sum()


def finetune(
    model: nn.Module,
    examples: Sequence[SFTExample],
    recipe: OrganismRecipe,
    *,
    pad_id: int,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model``'s trainable parameters (a Hugging Face causal LM: all of them, or only the adapters
    of `flowsteer.refusal.organism.lora.add_adapters`) in place, its matmuls in
    ``recipe.compute_dtype`` (resolved by `flowsteer.models.precision`) under autocast; return the training log."""
    if not examples:
        raise ValueError("no training examples")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = math.ceil(len(examples) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    optimiser = torch.optim.AdamW(trained, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)

    def schedule(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        return max(0.0, (total_steps - step) / max(total_steps - recipe.warmup_steps, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    precision = resolve_precision(recipe.compute_dtype, device)
    autocast = torch.autocast(device.type, dtype=precision.dtype, enabled=precision.dtype != torch.float32)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="fine-tune", disable=not progress)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for first in range(0, len(order), recipe.batch_size):
            batch = [examples[i] for i in order[first : first + recipe.batch_size]]
            with autocast:
                loss = weighted_loss(model, collate(batch, pad_id, recipe.first_token_weight).to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trained, recipe.max_grad_norm)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return {
        "precision": precision.to_dict(),
        "steps": total_steps,
        "examples": len(examples),
        "wall_seconds": time.perf_counter() - start,
        "loss_first_10_mean": sum(losses[:10]) / len(losses[:10]),
        "loss_last_10_mean": sum(losses[-10:]) / len(losses[-10:]),
        "losses": losses,
    }
