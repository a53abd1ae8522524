"""What a refusal-bypass intervention does on held-out prompts, and what it costs, per sample.

`outcomes` runs one method (its patches; none for the baseline) on a split's prompts and returns, per sample:

- on harmful prompts, from greedy replies judged by `flowsteer.evals.judge_replies` against the *unpatched base
  model*: ``refused``, ``complied`` (no refusal phrase), ``attack_success`` (not refused, coherent and on topic:
  gibberish, loops and off-topic text do not count), and the refusal log-odds at the last prompt position
  (``log_odds``, ``log_odds_refusal``);
- on harmless prompts: ``over_refused`` (the judge's refusal flag) and the next-token ``kl_harmless`` against the
  unpatched model;
- on plain paragraphs: ``ce_paragraphs`` (nats per token, per paragraph);
- the intervention's size on the harmful prompts: ``delta_norm_per_token`` (Σ over patched sites of ‖Δh‖, per
  token: what the model receives) and ``delta_norm_per_edit`` (‖Δh‖ of each changed (site, token) edit).

Replies are kept (``replies_harmful``, ``replies_harmless``) for reading. `delta_zero_check` is the round-trip test
of an invertible map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.evals import JudgeCalibration, cross_entropy, judge_replies, last_position_logits, next_token_kl
from flowsteer.evals.magnitude import per_edit_delta_norms, per_token_delta_norms
from flowsteer.invertible.intervention import InvertibleIntervention
from flowsteer.invertible.targets import Shift
from flowsteer.models.chat import chat_prompts
from flowsteer.patching import EffectLog, Patch, generate_with_patches, run_with_patches
from flowsteer.refusal.bypass.data import BypassPrompts
from flowsteer.refusal.bypass.linear import Steering
from flowsteer.refusal.logodds import refusal_log_odds, refusal_token_ids
from flowsteer.refusal.prompts import paragraphs


@dataclass
class BypassJudge:
    """What scores a bypass: the unpatched base model the replies are judged against, and its calibration."""

    reference: HookedTransformer
    calibration: JudgeCalibration


def outcomes(
    model: HookedTransformer,
    steering: Steering | None,
    prompts: BypassPrompts,
    split: str,
    judge: BypassJudge,
    *,
    max_new_tokens: int = 48,
    n_paragraphs: int | None = 10,
    batch_size: int = 16,
) -> dict[str, list]:
    """Per-sample outcomes of ``steering`` (None: the unpatched model) on ``split``'s prompts (see the module)."""
    patches: list[Patch] = list(steering.patches) if steering is not None else []
    harmful_items, harmless_items = prompts.items("harmful", split), prompts.items("harmless", split)
    harmful = chat_prompts(model, [item.text for item in harmful_items])
    harmless = chat_prompts(model, [item.text for item in harmless_items])
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size)
    replies = generate_with_patches(model, harmful, patches, **options).texts
    verdicts = judge_replies([i.text for i in harmful_items], replies, reference_model=judge.reference,
                             calibration=judge.calibration)
    record = EffectLog()
    logits = last_position_logits(model, harmful, patches, batch_size=batch_size, record=record if patches else None)
    log_odds = refusal_log_odds(logits, refusal_token_ids(model))
    harmless_replies = generate_with_patches(model, harmless, patches, **options).texts
    harmless_verdicts = judge_replies([i.text for i in harmless_items], harmless_replies,
                                      reference_model=judge.reference, calibration=judge.calibration)
    reference = last_position_logits(model, harmless, batch_size=batch_size)
    kl = next_token_kl(reference, last_position_logits(model, harmless, patches, batch_size=batch_size))
    texts = list(paragraphs())[:n_paragraphs]
    result = {
        "refused": [v.refused for v in verdicts],
        "complied": [not v.refused for v in verdicts],
        "attack_success": [v.success for v in verdicts],
        "incoherent_or_off_topic": [not v.refused and not (v.coherent and v.on_topic) for v in verdicts],
        "log_odds_refusal": [bool(x > 0) for x in log_odds.tolist()],
        "log_odds": log_odds.tolist(),
        "over_refused": [v.refused for v in harmless_verdicts],
        "kl_harmless": kl.tolist(),
        "ce_paragraphs": [cross_entropy(model, [text], patches)["cross_entropy"] for text in texts],
        "replies_harmful": [{"instruction": i.text, "reply": r, "verdict": v.to_dict()}
                            for i, r, v in zip(harmful_items, replies, verdicts, strict=True)],
        "replies_harmless": [{"instruction": i.text, "reply": r, "refused": v.refused}
                             for i, r, v in zip(harmless_items, harmless_replies, harmless_verdicts, strict=True)],
    }
    zeros = [0.0] * len(harmful)
    result["delta_norm_per_token"] = per_token_delta_norms(record).tolist() if patches else zeros
    result["delta_norm_per_edit"] = per_edit_delta_norms(record).tolist() if patches else []
    return result


@torch.no_grad()
def delta_zero_check(model: HookedTransformer, steering: Steering, prompts: Sequence[str]) -> dict:
    """Re-apply each invertible map of ``steering`` with a zero shift, ``h' = f⁻¹(f(h) + 0)``, at the same
    sites and positions: the largest |Δlogit| against the unpatched model (target: below 1e-4)."""
    zero = [
        Patch(p.site, InvertibleIntervention(p.intervention.bijection, Shift(p.intervention.d)), p.positions)
        for p in steering.patches
        if isinstance(p.intervention, InvertibleIntervention)
    ]
    if not zero:
        raise ValueError(f"{steering.name} has no invertible-map patch to check")
    clean = run_with_patches(model, list(prompts))
    patched = run_with_patches(model, list(prompts), zero)
    difference: Tensor = (patched - clean).abs()
    return {
        "max_abs_logit_difference": float(difference.max()),
        "logit_scale": float(clean.abs().max()),
        "patches": len(zero),
        "within_1e-4": bool(difference.max() <= 1e-4),
    }
