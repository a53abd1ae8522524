"""Generic evaluation metrics, each defined once, used by steering, refusal bypass, flow analyses and the demo:

- `text`: NLL / perplexity of a continuation under a reference model, repetition;
- `capability`: next-token KL, cross-entropy on plain text (and the per-token NLL it is built on);
- `logits`: last-position logits with patches; `lens`: the tokens a direction promotes (logit lens);
- `magnitude`: the size of an intervention from an effect log;
- `classifier`: a TF-IDF text classifier and k-fold accuracy of any classifier; `sentiment`: sentiment scorers;
- `judge`: the reply judge (refused / coherent / on topic / success) and its calibration;
- `intervals`: 95% intervals (Wilson, bootstrap); `protocol`: the comparison protocol (equal budgets, selection on
  validation, one report on test, a baseline row).

Refusal-specific judging (substring list, refusal log-odds) is in `flowsteer.refusal`.
"""

from flowsteer.evals.capability import cross_entropy, next_token_kl, token_nll
from flowsteer.evals.classifier import ThemeClassifier, cross_validated_accuracy, theme_classifier_accuracy
from flowsteer.evals.intervals import Estimate, mean, rate
from flowsteer.evals.judge import JudgeCalibration, Verdict, judge_replies, success_rate
from flowsteer.evals.lens import logit_lens
from flowsteer.evals.logits import last_position_logits
from flowsteer.evals.magnitude import intervention_magnitude
from flowsteer.evals.protocol import Comparison, Method, Protocol, compare
from flowsteer.evals.text import (
    continuation_nll,
    continuation_perplexity,
    perplexity,
    repetition,
    repetition_rate,
    words,
)

__all__ = [
    "Comparison",
    "Estimate",
    "JudgeCalibration",
    "Method",
    "Protocol",
    "Verdict",
    "compare",
    "judge_replies",
    "mean",
    "rate",
    "success_rate",
    "ThemeClassifier",
    "continuation_nll",
    "continuation_perplexity",
    "cross_entropy",
    "cross_validated_accuracy",
    "intervention_magnitude",
    "last_position_logits",
    "logit_lens",
    "next_token_kl",
    "perplexity",
    "repetition",
    "repetition_rate",
    "theme_classifier_accuracy",
    "token_nll",
    "words",
]
