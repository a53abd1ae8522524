"""Supervised examples for the refusal organism: chat prompt tokens plus reply tokens."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from transformer_lens import HookedTransformer

from flowsteer.data.refusal import Instruction, refusal_replies
from flowsteer.evals.judge import is_refusal
from flowsteer.models.chat import chat_prompt
from flowsteer.patching import generate_with_patches


@dataclass(frozen=True)
class SFTExample:
    """One training example: the chat-formatted prompt's token ids and the reply's (loss on the reply)."""

    instruction: Instruction
    prompt_ids: tuple[int, ...]
    reply_ids: tuple[int, ...]


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
        if is_refusal(text):
            dropped.append({"id": item.id, "instruction": item.text, "reply": text})
            continue
        reply = list(tokens) + ([eos] if len(tokens) < max_new_tokens else [])
        examples.append(SFTExample(item, _prompt_ids(model, item), tuple(reply)))
    return examples, dropped
