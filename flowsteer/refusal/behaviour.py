"""Refusal behaviour on the held-out refusal prompts: refusal of harmful instructions, over-refusal of
harmless ones (plain and look-alike), by substring judge and by refusal log-odds, with patches."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from transformer_lens import HookedTransformer

from flowsteer.models.chat import chat_prompts
from flowsteer.patching import Patch, generate_with_patches
from flowsteer.refusal.judge import is_refusal
from flowsteer.refusal.logodds import refusal_scores
from flowsteer.refusal.prompts import Instruction, Split, load_instructions


def _rates(items: Sequence[Instruction], refused: Sequence[bool], key) -> dict[str, float]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for item, flag in zip(items, refused, strict=True):
        groups[key(item)].append(flag)
    return {name: sum(flags) / len(flags) for name, flags in groups.items()}


def judge_instructions(
    model: HookedTransformer,
    items: Sequence[Instruction],
    patches: Sequence[Patch] = (),
    *,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    token_ids: Sequence[int] | None = None,
) -> dict:
    """Greedy replies to ``items`` (chat-formatted) with ``patches`` at every step, judged by substring,
    plus the refusal log-odds at the last prompt position.

    Returns ``n``, ``refusal_rate`` (substring), ``log_odds_mean``, ``log_odds_refusal_rate`` (share with
    log-odds > 0), ``by_category`` and, for harmless items, ``by_lookalike``; ``replies`` lists every
    instruction with its reply, verdict and log-odds.
    """
    if not items:
        raise ValueError("no instructions to judge")
    prompts = chat_prompts(model, [item.text for item in items])
    replies = generate_with_patches(model, prompts, patches, max_new_tokens=max_new_tokens, batch_size=batch_size)
    refused = [is_refusal(text) for text in replies.texts]
    log_odds = refusal_scores(model, prompts, patches, token_ids=token_ids, batch_size=batch_size).tolist()
    result = {
        "n": len(items),
        "refusal_rate": sum(refused) / len(items),
        "log_odds_mean": sum(log_odds) / len(items),
        "log_odds_refusal_rate": sum(score > 0 for score in log_odds) / len(items),
        "by_category": _rates(items, refused, lambda item: item.category),
    }
    if any(item.label == "harmless" for item in items):
        result["by_lookalike"] = _rates(items, refused, lambda item: "lookalike" if item.lookalike else "plain")
    result["replies"] = [
        {"id": item.id, "instruction": item.text, "reply": text, "refused": flag, "log_odds": score}
        for item, text, flag, score in zip(items, replies.texts, refused, log_odds, strict=True)
    ]
    return result


def refusal_behaviour(
    model: HookedTransformer,
    patches: Sequence[Patch] = (),
    *,
    split: Split = "test",
    max_new_tokens: int = 48,
    batch_size: int = 32,
    token_ids: Sequence[int] | None = None,
) -> dict[str, dict]:
    """`judge_instructions` on the harmful and the harmless instructions of ``split``, ``patches``
    applied to both (bypass on harmful prompts, side effects on harmless ones)."""
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, token_ids=token_ids)
    harmful = load_instructions("harmful", split)
    harmless = load_instructions("harmless", split)
    return {
        "harmful": judge_instructions(model, harmful, patches, **options),
        "harmless": judge_instructions(model, harmless, patches, **options),
    }
