"""Linear baselines after Arditi et al. 2024: difference-in-means directions per layer and
post-instruction position, their selection procedure, ActAdd and directional ablation as patches."""

from flowsteer.linear.directions import DiffInMeans, diff_in_means, mean_resid_pre, post_instruction_positions
from flowsteer.linear.patches import ABLATION_KINDS, ablation_patches, actadd_patches
from flowsteer.linear.selection import (
    DirectionScores,
    NoDirectionSelected,
    Selection,
    filter_by_refusal_score,
    score_directions,
    select_direction,
    select_direction_relaxed,
)

__all__ = [
    "ABLATION_KINDS",
    "DiffInMeans",
    "DirectionScores",
    "NoDirectionSelected",
    "Selection",
    "ablation_patches",
    "actadd_patches",
    "diff_in_means",
    "filter_by_refusal_score",
    "mean_resid_pre",
    "post_instruction_positions",
    "score_directions",
    "select_direction",
    "select_direction_relaxed",
]
