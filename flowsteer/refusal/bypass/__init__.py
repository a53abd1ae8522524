"""Bypassing the refusal organism's refusals: linear and invertible-map interventions side by side.

- `data`: chat-formatted train/val prompts and held-out test instructions of the refusal data;
- `linear`: the Arditi-selected difference-in-means direction, ActAdd, directional ablation;
- `trained`: DAS and the i-ResNet map trained by interchange, the i-ResNet shift, INNSteer (thin clients of
  `flowsteer.invertible`);
- `evaluate`: one method's per-sample outcomes on a split, judged by the reply judge; `compare`: all of them under
  the comparison protocol (equal budgets, selection on validation, one report on test, the baseline row), their
  table, and a quick demo version.

See docs/invertible.md.
"""

from flowsteer.refusal.bypass.compare import (
    METHODS,
    BypassSettings,
    compare_bypass,
    fit_method,
    markdown_table,
    quick_refusal_comparison,
)
from flowsteer.refusal.bypass.data import BypassPrompts, bypass_prompts, spread
from flowsteer.refusal.bypass.evaluate import BypassJudge, delta_zero_check, outcomes
from flowsteer.refusal.bypass.linear import LinearDirection, Steering, actadd, directional_ablation, linear_direction
from flowsteer.refusal.bypass.trained import (
    INNSteerFit,
    fit_innsteer_bypass,
    fit_interchange,
    fit_shift,
    refusal_loss,
)

__all__ = [
    "METHODS",
    "BypassJudge",
    "BypassPrompts",
    "BypassSettings",
    "INNSteerFit",
    "LinearDirection",
    "Steering",
    "actadd",
    "bypass_prompts",
    "compare_bypass",
    "delta_zero_check",
    "directional_ablation",
    "fit_innsteer_bypass",
    "fit_interchange",
    "fit_method",
    "fit_shift",
    "linear_direction",
    "markdown_table",
    "outcomes",
    "quick_refusal_comparison",
    "refusal_loss",
    "spread",
]
