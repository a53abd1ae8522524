"""Fine-tuning a Hugging Face causal LM on `SFTExample`s, loss on reply tokens only.

Training runs on the Hugging Face model, not on a flowsteer `HookedTransformer`: models from
`load_model` are frozen and re-laid out for inference (`flowsteer.models.prepare`), and stay so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowsteer.organism.recipe import OrganismRecipe
from flowsteer.organism.targets import SFTExample


def collate(
    examples: Sequence[SFTExample], pad_id: int, first_token_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and per-position loss weights for the next token
    (weights[t] applies to predicting token t+1: 0 on prompt and padding, ``first_token_weight`` on the
    first reply token, 1 on the rest)."""
    width = max(len(e.prompt_ids) + len(e.reply_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    weights = torch.zeros((len(examples), width - 1))
    for row, example in enumerate(examples):
        sequence = list(example.prompt_ids) + list(example.reply_ids)
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
        first = len(example.prompt_ids) - 1  # position whose next token is the first reply token
        weights[row, first : len(sequence) - 1] = 1.0
        weights[row, first] = first_token_weight
    return ids, mask, weights


def weighted_loss(model: nn.Module, ids: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """Σ w·CE / Σ w over next-token predictions, unembedding only the positions with w > 0 (the
    reply), which saves the vocabulary-sized matmul on every prompt token."""
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    used = weights > 0
    logits = model.get_output_embeddings()(hidden[used]).float()
    per_token = nn.functional.cross_entropy(logits, ids[:, 1:][used], reduction="none")
    return (per_token * weights[used]).sum() / weights[used].sum()


def finetune(
    model: nn.Module,
    examples: Sequence[SFTExample],
    recipe: OrganismRecipe,
    *,
    pad_id: int,
    progress: bool = True,
) -> dict:
    """Fine-tune ``model`` (a Hugging Face causal LM, all parameters) in place; return the training log."""
    if not examples:
        raise ValueError("no training examples")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(recipe.seed)
    steps_per_epoch = math.ceil(len(examples) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.epochs
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)

    def schedule(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        return max(0.0, (total_steps - step) / max(total_steps - recipe.warmup_steps, 1))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="fine-tune", disable=not progress)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for first in range(0, len(order), recipe.batch_size):
            batch = [examples[i] for i in order[first : first + recipe.batch_size]]
            ids, mask, weights = collate(batch, pad_id, recipe.first_token_weight)
            loss = weighted_loss(model, ids.to(device), mask.to(device), weights.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
            optimiser.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return {
        "steps": total_steps,
        "examples": len(examples),
        "wall_seconds": time.perf_counter() - start,
        "loss_first_10_mean": sum(losses[:10]) / len(losses[:10]),
        "loss_last_10_mean": sum(losses[-10:]) / len(losses[-10:]),
        "losses": losses,
    }
