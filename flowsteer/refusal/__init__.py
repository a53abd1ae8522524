"""Everything about refusal, in one package:

- `prompts`: the refusal prompt sets of ``data/refusal/`` (fixed train/val/test splits), replies, paragraphs;
- `judge`: the refusal substring judge; `logodds`: Arditi's refusal log-odds at the last prompt position;
- `behaviour`: refusal and over-refusal of held-out prompts with patches;
- `selection`: Arditi's selection of a difference-in-means direction (the directions themselves are generic:
  `flowsteer.steering.contrast`);
- `organism`: the refusal model organism (recipe, low-rank fine-tune, shipped adapter, cache);
- `bypass`: bypassing refusal with linear and invertible-map interventions, side by side.

Generic text metrics and the reply judge are in `flowsteer.evals`; invertible maps in `flowsteer.invertible`.
"""

from flowsteer.refusal.behaviour import judge_instructions, refusal_behaviour
from flowsteer.refusal.judge import ARDITI_REFUSAL_SUBSTRINGS, REFUSAL_SUBSTRINGS, is_refusal, refusal_rate
from flowsteer.refusal.logodds import refusal_log_odds, refusal_scores, refusal_token_ids
from flowsteer.refusal.prompts import Instruction, RefusalDataError, load_instructions, paragraphs
from flowsteer.refusal.selection import DirectionScores, NoDirectionSelected, score_directions, select_direction

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
