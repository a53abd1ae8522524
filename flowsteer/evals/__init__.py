"""Evaluation metrics: refusal judges, refusal log-odds, next-token KL, cross-entropy, intervention size."""

from flowsteer.evals.capability import cross_entropy, next_token_kl
from flowsteer.evals.judge import ARDITI_REFUSAL_SUBSTRINGS, REFUSAL_SUBSTRINGS, is_refusal, refusal_rate
from flowsteer.evals.logits import last_position_logits
from flowsteer.evals.logodds import refusal_log_odds, refusal_scores, refusal_token_ids
from flowsteer.evals.magnitude import intervention_magnitude

__all__ = [
    "ARDITI_REFUSAL_SUBSTRINGS",
    "REFUSAL_SUBSTRINGS",
    "cross_entropy",
    "intervention_magnitude",
    "is_refusal",
    "last_position_logits",
    "next_token_kl",
    "refusal_log_odds",
    "refusal_rate",
    "refusal_scores",
    "refusal_token_ids",
]
