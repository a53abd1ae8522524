"""Linear vs invertible-map refusal bypass, side by side: `compare_bypass`, its markdown table, and
`quick_refusal_comparison`, a small version (a few minutes on a CPU) for demos."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from transformer_lens import HookedTransformer

from flowsteer.evals import last_position_logits
from flowsteer.models.chat import chat_prompts
from flowsteer.refusal.bypass.data import BypassPrompts, bypass_prompts
from flowsteer.refusal.bypass.evaluate import delta_zero_check, evaluate_steering, ratios_to
from flowsteer.refusal.bypass.linear import LinearDirection, Steering, actadd, directional_ablation, linear_direction
from flowsteer.refusal.bypass.trained import (
    FLOW_TRAINING,
    INTERCHANGE_TRAINING,
    fit_innsteer_bypass,
    fit_interchange,
    fit_shift,
    training_config,
)

METHODS = ("actadd", "directional_ablation", "das", "nonlinear", "nonlinear_shift", "innsteer")


def fit_method(
    model: HookedTransformer,
    name: str,
    prompts: BypassPrompts,
    direction: LinearDirection,
    *,
    layer: int | None = None,
    steps: int = 120,
    latent_size: int = 1,
    magnitude_weight: float = 1.0,
    flow_steps: int = 300,
    seed: int = 0,
) -> Steering:
    """Fit one of `METHODS` (the linear ones only read ``direction``)."""
    config = training_config(INTERCHANGE_TRAINING, steps=steps, seed=seed)
    if name == "actadd":
        return actadd(direction, layer)
    if name == "directional_ablation":
        return directional_ablation(direction, model.cfg.n_layers)
    if name in ("das", "nonlinear"):
        return fit_interchange(
            model,
            prompts,
            direction,
            kind=name,
            layer=layer,
            latent_size=latent_size,
            magnitude_weight=magnitude_weight,
            config=config,
            seed=seed,
        )
    if name == "nonlinear_shift":
        return fit_shift(
            model,
            prompts,
            direction,
            layer=layer,
            latent_size=latent_size,
            magnitude_weight=magnitude_weight,
            config=config,
            seed=seed,
        )
    if name == "innsteer":
        flow_config = training_config(FLOW_TRAINING, steps=flow_steps, seed=seed)
        return fit_innsteer_bypass(model, prompts, direction, layer=layer, config=flow_config, seed=seed)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def compare_bypass(
    model: HookedTransformer,
    prompts: BypassPrompts,
    *,
    methods: Sequence[str] = METHODS,
    selection_layers: Sequence[int] | None = None,
    direction: LinearDirection | None = None,
    layer: int | None = None,
    steps: int = 120,
    latent_size: int = 1,
    magnitude_weight: float = 1.0,
    flow_steps: int = 300,
    max_new_tokens: int = 32,
    n_paragraphs: int | None = 20,
    generate: bool = True,
    seed: int = 0,
    log=print,
) -> dict:
    """Select the linear direction (Arditi's procedure on ``selection_layers``, unless ``direction`` is
    given), fit ``methods`` at ``layer`` (default the direction's layer) and evaluate each, plus the
    unpatched baseline, on the held-out prompts. Returns a JSON-able dict (see `markdown_table`)."""
    start = time.perf_counter()
    if direction is None:
        layers = list(selection_layers) if selection_layers is not None else [model.cfg.n_layers // 2]
        direction = linear_direction(model, prompts, layers)
    log(
        f"direction: layer {direction.layer}, position {direction.position}, "
        f"|r| {float(direction.direction.norm()):.2f}"
    )
    harmless = chat_prompts(model, [item.text for item in prompts.harmless_test])
    reference = last_position_logits(model, harmless)
    options = dict(reference=reference, max_new_tokens=max_new_tokens, n_paragraphs=n_paragraphs, generate=generate)
    results = {"baseline": evaluate_steering(model, None, prompts, **options)}
    checks = {}
    for name in methods:
        steering = fit_method(
            model,
            name,
            prompts,
            direction,
            layer=layer,
            steps=steps,
            latent_size=latent_size,
            magnitude_weight=magnitude_weight,
            flow_steps=flow_steps,
            seed=seed,
        )
        results[name] = evaluate_steering(model, steering, prompts, **options) | {"fit": steering.details}
        if name in ("das", "nonlinear", "nonlinear_shift", "innsteer"):
            checks[name] = delta_zero_check(
                model, steering, chat_prompts(model, [i.text for i in prompts.harmful_test[:8]])
            )
        log(summary_line(name, results[name]))
    ratios_to(results)
    return {
        "model": model.cfg.model_name,
        "prompts": prompts.sizes(),
        "direction": {
            "layer": direction.layer,
            "position": direction.position,
            "norm": float(direction.direction.norm()),
            "selection": direction.selection,
        },
        "layer": direction.layer if layer is None else layer,
        "settings": {
            "steps": steps,
            "latent_size": latent_size,
            "magnitude_weight": magnitude_weight,
            "flow_steps": flow_steps,
            "max_new_tokens": max_new_tokens,
            "n_paragraphs": n_paragraphs,
            "generate": generate,
            "seed": seed,
        },
        "results": results,
        "delta_zero_check": checks,
        "seconds": time.perf_counter() - start,
    }


def summary_line(name: str, result: dict) -> str:
    magnitude = result.get("magnitude", {})
    harmful, harmless = result["harmful"], result["harmless"]
    judged = f"refused {harmful['refusal_rate']:.2f} " if "refusal_rate" in harmful else ""
    return (
        f"{name:22s} harmful {judged}log-odds>0 {harmful['log_odds_refusal_rate']:.2f} "
        f"(mean {harmful['log_odds_mean']:+.2f}) | harmless log-odds>0 {harmless['log_odds_refusal_rate']:.2f} | "
        f"KL {result['kl_harmless']:.3f} | mean|dh| {magnitude.get('mean_delta_norm', 0):.2f}"
    )


def _cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(comparison: dict) -> str:
    """One row per method: refusal (judge, log-odds), over-refusal, KL, CE, ||Δh|| and its ratio to ActAdd."""
    header = (
        "| method | harmful refused (judge) | harmful log-odds > 0 | mean log-odds | harmless refused (judge) | "
        "harmless log-odds > 0 | KL harmless | CE paragraphs | mean ‖Δh‖ | mean ‖Δh‖/‖h‖ | Σ‖Δh‖ per token | "
        "locations changed | ‖Δh‖ / ActAdd's |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, r in comparison["results"].items():
        m = r.get("magnitude", {})
        lines.append(
            f"| {name} | {_cell(r['harmful'].get('refusal_rate'), '.2f')} | "
            f"{r['harmful']['log_odds_refusal_rate']:.2f} | "
            f"{r['harmful']['log_odds_mean']:+.2f} | {_cell(r['harmless'].get('refusal_rate'), '.2f')} | "
            f"{r['harmless']['log_odds_refusal_rate']:.2f} | {r['kl_harmless']:.4f} | "
            f"{r['cross_entropy_paragraphs']:.4f} | "
            f"{_cell(m.get('mean_delta_norm'), '.3f')} | {_cell(m.get('mean_relative_delta'), '.4f')} | "
            f"{_cell(m.get('delta_norm_per_token'), '.3f')} | {_cell(m.get('fraction_changed'), '.4f')} | "
            f"{_cell(m.get('mean_delta_norm_ratio_to_actadd'), '.3f')} |"
        )
    return "\n".join(lines)


def quick_refusal_comparison(
    model: HookedTransformer | str = "smollm2-135m-refusal",
    *,
    layer: int = 12,
    n_train: int = 48,
    n_val: int = 16,
    n_test: int = 16,
    steps: int = 40,
    seed: int = 0,
    log=print,
) -> dict:
    """A small linear vs non-linear comparison for demos (177 s in a demo run on 2 idle CPU cores): the
    difference-in-means direction at ``layer`` (Arditi's selection over its post-instruction positions),
    ActAdd and the i-ResNet map trained for ``steps`` steps, judged by refusal log-odds (no generation) on
    ``n_test`` held-out prompts per label, with mean ||Δh|| and the δ = 0 round trip."""
    from flowsteer.models.loading import load_model

    torch.manual_seed(seed)
    if isinstance(model, str):
        model = load_model(model)
    prompts = bypass_prompts(model, n_train=n_train, n_val=n_val, n_test=n_test)
    return compare_bypass(
        model,
        prompts,
        methods=("actadd", "nonlinear"),
        selection_layers=[layer],
        steps=steps,
        n_paragraphs=5,
        generate=False,
        seed=seed,
        log=log,
    )
