"""Supervised examples for the refusal organism: chat prompt tokens plus reply tokens, with hard targets
(the reply's next token) or soft ones (a teacher's top-k next-token distribution along the reply)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.models.chat import chat_prompt
from flowsteer.patching import generate_with_patches, run_with_patches
from flowsteer.patching.inputs import left_pad
from flowsteer.refusal.judge import substring_refusal
from flowsteer.refusal.prompts import Instruction, RefusalDataError, data_dir, harmless_replies, refusal_replies


@dataclass(frozen=True)
class SFTExample:
    """One training example: the chat-formatted prompt's token ids and the reply's (loss on the reply).

    Without ``soft_ids`` the target of each reply position is the reply's token; with them it is the
    distribution ``soft_probs`` over ``soft_ids`` (a teacher's top-k, renormalised), one row per reply token.
    """

    instruction: Instruction
    prompt_ids: tuple[int, ...]
    reply_ids: tuple[int, ...]
    soft_ids: Int[Tensor, "reply k"] | None = None
    soft_probs: Float[Tensor, "reply k"] | None = None


def _prompt_ids(model: HookedTransformer, item: Instruction) -> tuple[int, ...]:
    return tuple(model.to_tokens(chat_prompt(model, item.text), move_to_device=False)[0].tolist())


def refusal_examples(model: HookedTransformer, items: Sequence[Instruction]) -> list[SFTExample]:
    """Harmful instructions → a hand-written refusal + end of turn, assigned round-robin within the
    replies meant for the item's category (``general`` when there are none)."""
    replies: dict[str, list[str]] = defaultdict(list)
    for reply in refusal_replies():
        replies[reply.category].append(reply.text)
    eos = model.tokenizer.eos_token_id
    used: dict[str, int] = defaultdict(int)
    examples = []
    for item in items:
        pool = item.category if item.category in replies else "general"
        text = replies[pool][used[pool] % len(replies[pool])]
        used[pool] += 1
        reply = model.tokenizer.encode(text, add_special_tokens=False) + [eos]
        examples.append(SFTExample(item, _prompt_ids(model, item), tuple(reply)))
    return examples


def self_distilled_examples(
    model: HookedTransformer,
    items: Sequence[Instruction],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
) -> tuple[list[SFTExample], list[dict]]:
    """Harmless instructions → ``model``'s own greedy reply (with end of turn when it ended early).

    Replies the substring judge calls refusals are dropped (they would teach over-refusal); they are
    returned as the second element for the record.
    """
    prompts = [chat_prompt(model, item.text) for item in items]
    replies = generate_with_patches(model, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    eos = model.tokenizer.eos_token_id
    examples, dropped = [], []
    for item, text, tokens in zip(items, replies.texts, replies.tokens, strict=True):
        if substring_refusal(text):
            dropped.append({"id": item.id, "instruction": item.text, "reply": text})
            continue
        reply = list(tokens) + ([eos] if len(tokens) < max_new_tokens else [])
        examples.append(SFTExample(item, _prompt_ids(model, item), tuple(reply)))
    return examples, dropped


def stored_reply_examples(
    model: HookedTransformer, items: Sequence[Instruction]
) -> tuple[list[SFTExample], list[dict]]:
    """Harmless instructions → the base model's own greedy reply as stored in
    ``data/refusal/harmless_replies.jsonl`` (what `self_distilled_examples` gives, without the minutes of
    generation, and the same on every machine). Refusal-like replies are left out and returned second."""
    stored = harmless_replies()
    examples, dropped = [], []
    for item in items:
        if item.id not in stored:
            raise RefusalDataError(
                f"no stored reply for {item.id} in {data_dir() / 'harmless_replies.jsonl'}: the stored replies do "
                "not cover these instructions; train on self_distilled_examples (it generates the replies) or set "
                "FLOWSTEER_DATA to a folder whose refusal/ holds replies for all of them"
            )
        reply = stored[item.id]
        if reply.refusal_like or reply.reply_ids is None:
            dropped.append({"id": item.id, "instruction": item.text, "reply": reply.text})
            continue
        examples.append(SFTExample(item, _prompt_ids(model, item), reply.reply_ids))
    return examples, dropped


@torch.no_grad()
def with_teacher_targets(
    teacher: HookedTransformer,
    examples: Sequence[SFTExample],
    top_k: int,
    *,
    hard_first_token: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> list[SFTExample]:
    """``examples`` with soft targets: ``teacher``'s top-``top_k`` next-token distribution (renormalised)
    at every reply position, computed on the prompt + reply sequence. Distilling the distribution instead
    of the greedy tokens keeps the student's probabilities calibrated (its cross-entropy on plain text).
    With ``hard_first_token`` the first reply position targets the reply's own first token with
    probability 1: the answer-or-refuse decision is taught outright, the rest distilled."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    pad = teacher.tokenizer.pad_token_id or 0
    result = []
    rows = [torch.tensor(e.prompt_ids + e.reply_ids) for e in examples]
    pieces = left_pad(rows, pad).split(batch_size)
    for piece in tqdm(pieces, total=-(-len(rows) // batch_size), desc="teacher targets", disable=not progress):
        chunk = examples[len(result) : len(result) + len(piece)]
        logits = run_with_patches(teacher, piece)
        width = logits.shape[1]
        for row, example in enumerate(chunk):
            n = len(example.reply_ids)
            # Columns predicting the reply: the last n+1 columns minus the final one (left padding).
            probs = logits[row, width - n - 1 : width - 1].double().softmax(-1)
            top = probs.topk(top_k, dim=-1)
            ids, soft = top.indices.cpu(), (top.values / top.values.sum(-1, keepdim=True)).float().cpu()
            if hard_first_token:
                ids[0, 0], soft[0] = example.reply_ids[0], 0.0
                soft[0, 0] = 1.0
            result.append(replace(example, soft_ids=ids, soft_probs=soft))
    return result
