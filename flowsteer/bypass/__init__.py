"""Refusal bypass, linear vs invertible-map interventions (issue 6's comparison).

- `bypass_prompts`: chat-formatted train/val prompts and held-out test instructions of the refusal data;
- `linear_direction` (Arditi's selection), `actadd`, `directional_ablation`, `fit_interchange` (DAS or the
  i-ResNet map, trained by interchange), `fit_innsteer_bypass` (coupling flow, latent translation);
- `evaluate_steering`, `delta_zero_check`; `compare_bypass` and `markdown_table`;
- `quick_refusal_comparison`: a few-minute linear vs non-linear comparison for demos.

See docs/invertible.md.
"""

from flowsteer.bypass.compare import METHODS, compare_bypass, fit_method, markdown_table, quick_refusal_comparison
from flowsteer.bypass.data import BypassPrompts, bypass_prompts, spread
from flowsteer.bypass.evaluate import delta_zero_check, evaluate_steering, ratios_to
from flowsteer.bypass.methods import (
    LinearDirection,
    Steering,
    actadd,
    das_map,
    directional_ablation,
    fit_innsteer_bypass,
    fit_interchange,
    fit_shift,
    linear_direction,
    nonlinear_map,
    refusal_loss,
    rotation_from,
)

__all__ = [
    "METHODS",
    "BypassPrompts",
    "LinearDirection",
    "Steering",
    "actadd",
    "bypass_prompts",
    "compare_bypass",
    "das_map",
    "delta_zero_check",
    "directional_ablation",
    "evaluate_steering",
    "fit_innsteer_bypass",
    "fit_interchange",
    "fit_shift",
    "fit_method",
    "linear_direction",
    "markdown_table",
    "nonlinear_map",
    "quick_refusal_comparison",
    "ratios_to",
    "refusal_loss",
    "rotation_from",
    "spread",
]
