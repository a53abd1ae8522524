"""Everything about refusal, in one package:

- `prompts`: the refusal prompt sets of ``data/refusal/`` (fixed train/val/test splits), replies, paragraphs;
- `judge`: the refusal phrase detector (the ``refused`` flag of `flowsteer.evals.judge_replies`);
- `logodds`: Arditi's refusal log-odds at the last prompt position;
- `behaviour`: refusal and over-refusal of held-out prompts with patches;
- `selection`: Arditi's selection of a difference-in-means direction (the directions themselves are generic:
  `flowsteer.steering.contrast`);
- `organism`: the refusal model organism (recipe, low-rank fine-tune, shipped adapter, cache);
- `bypass`: bypassing refusal with linear and invertible-map interventions, side by side.

Generic text metrics and the reply judge are in `flowsteer.evals`; invertible maps in `flowsteer.invertible`.
The names below load their module on first use, so importing one part (the phrase detector) loads no other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_LAZY = {
    "ARDITI_REFUSAL_SUBSTRINGS": "judge",
    "REFUSAL_SUBSTRINGS": "judge",
    "is_refusal": "judge",
    "refusal_rate": "judge",
    "refusal_log_odds": "logodds",
    "refusal_scores": "logodds",
    "refusal_token_ids": "logodds",
    "judge_instructions": "behaviour",
    "refusal_behaviour": "behaviour",
    "Instruction": "prompts",
    "RefusalDataError": "prompts",
    "load_instructions": "prompts",
    "paragraphs": "prompts",
    "DirectionScores": "selection",
    "NoDirectionSelected": "selection",
    "score_directions": "selection",
    "select_direction": "selection",
}

if TYPE_CHECKING:
    from flowsteer.refusal.behaviour import judge_instructions, refusal_behaviour
    from flowsteer.refusal.judge import ARDITI_REFUSAL_SUBSTRINGS, REFUSAL_SUBSTRINGS, is_refusal, refusal_rate
    from flowsteer.refusal.logodds import refusal_log_odds, refusal_scores, refusal_token_ids
    from flowsteer.refusal.prompts import Instruction, RefusalDataError, load_instructions, paragraphs
    from flowsteer.refusal.selection import DirectionScores, NoDirectionSelected, score_directions, select_direction


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARDITI_REFUSAL_SUBSTRINGS",
    "REFUSAL_SUBSTRINGS",
    "DirectionScores",
    "Instruction",
    "NoDirectionSelected",
    "RefusalDataError",
    "is_refusal",
    "judge_instructions",
    "load_instructions",
    "paragraphs",
    "refusal_behaviour",
    "refusal_log_odds",
    "refusal_rate",
    "refusal_scores",
    "refusal_token_ids",
    "score_directions",
    "select_direction",
]
