"""What a refusal-bypass intervention does on held-out prompts, and what it costs.

`evaluate_steering` measures, with the same patches everywhere: refusal of harmful test instructions and
over-refusal of harmless ones (substring judge on greedy replies, and refusal log-odds at the last prompt
position), next-token KL on the harmless prompts against the unpatched model, cross-entropy on plain
paragraphs, and the intervention's size on the harmful prompts (`flowsteer.evals.intervention_magnitude`:
mean ||Δh|| over changed (site, token) pairs, relative to ||h||, Σ_sites ||Δh|| per token, and the fraction
of (layer, position) locations changed). `delta_zero_check` is the round-trip test of an invertible map.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from flowsteer.evals import cross_entropy, intervention_magnitude, last_position_logits, next_token_kl
from flowsteer.invertible.intervention import InvertibleIntervention
from flowsteer.invertible.targets import Shift
from flowsteer.models.chat import chat_prompts
from flowsteer.patching import EffectLog, Patch, run_with_patches
from flowsteer.refusal import refusal_scores
from flowsteer.refusal.behaviour import judge_instructions
from flowsteer.refusal.bypass.data import BypassPrompts
from flowsteer.refusal.bypass.linear import Steering
from flowsteer.refusal.bypass.trained import inverse_residuals
from flowsteer.refusal.prompts import paragraphs

MAGNITUDE_KEYS = (
    "mean_delta_norm",
    "mean_relative_delta",
    "delta_norm_per_token",
    "fraction_changed",
    "locations_changed",
    "edits_changed",
)


def evaluate_steering(
    model: HookedTransformer,
    steering: Steering | None,
    prompts: BypassPrompts,
    *,
    reference: Tensor | None = None,
    max_new_tokens: int = 32,
    n_paragraphs: int | None = 20,
    generate: bool = True,
    keep_replies: int = 3,
) -> dict:
    """Every metric of one method (``steering=None``: the unpatched model) on the test prompts.

    ``reference`` is the unpatched model's next-token logits on the harmless test prompts (computed when not
    given). With ``generate=False`` only log-odds, KL, cross-entropy and magnitude are measured (faster).
    """
    start = time.perf_counter()
    patches: list[Patch] = list(steering.patches) if steering is not None else []
    harmless = chat_prompts(model, [item.text for item in prompts.harmless_test])
    harmful = chat_prompts(model, [item.text for item in prompts.harmful_test])
    if reference is None:
        reference = last_position_logits(model, harmless)
    result: dict = {"method": steering.name if steering is not None else "baseline"}
    for label, items in (("harmful", prompts.harmful_test), ("harmless", prompts.harmless_test)):
        if generate:
            judged = judge_instructions(model, items, patches, max_new_tokens=max_new_tokens)
            replies = judged.pop("replies")
            judged["examples"] = [
                {"instruction": r["instruction"], "reply": r["reply"]} for r in replies[:keep_replies]
            ]
        else:
            scores = refusal_scores(model, harmful if label == "harmful" else harmless, patches)
            judged = {
                "n": len(items),
                "log_odds_mean": float(scores.mean()),
                "log_odds_refusal_rate": float((scores > 0).float().mean()),
            }
        result[label] = judged
    result["kl_harmless"] = float(next_token_kl(reference, last_position_logits(model, harmless, patches)).mean())
    texts = list(paragraphs())[:n_paragraphs] if n_paragraphs else list(paragraphs())
    result["cross_entropy_paragraphs"] = cross_entropy(model, texts, patches)["cross_entropy"]
    if patches:
        log = EffectLog()
        last_position_logits(model, harmful, patches, record=log)
        magnitude = intervention_magnitude(log, model.cfg.n_layers)
        result["magnitude"] = {key: magnitude[key] for key in MAGNITUDE_KEYS} | {
            "sites": magnitude["sites"],
            "tokens": magnitude["tokens"],
        }
        residuals = inverse_residuals(steering)
        if residuals:
            result["max_inverse_residual"] = max(residuals)
    result["seconds"] = time.perf_counter() - start
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
    difference = (patched - clean).abs()
    return {
        "max_abs_logit_difference": float(difference.max()),
        "logit_scale": float(clean.abs().max()),
        "patches": len(zero),
        "within_1e-4": bool(difference.max() <= 1e-4),
    }


def ratios_to(results: dict[str, dict], reference: str = "actadd") -> None:
    """Add each method's magnitude ratios to ``reference``'s (mean ||Δh|| and Σ||Δh|| per token), in place."""
    if reference not in results or "magnitude" not in results[reference]:
        return
    base = results[reference]["magnitude"]
    for result in results.values():
        magnitude = result.get("magnitude")
        if magnitude is None:
            continue
        for key in ("mean_delta_norm", "delta_norm_per_token"):
            magnitude[f"{key}_ratio_to_{reference}"] = magnitude[key] / base[key] if base[key] else float("nan")
