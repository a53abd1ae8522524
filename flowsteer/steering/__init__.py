"""Steering by SAE features (Feature Flow, arXiv 2502.03032, §4-5 and App. B): add, rescale or clamp
features at one site or along a flow graph, choose features for a theme, and score the result
locally; compare steering methods under the comparison protocol (`protocol`, with disjoint data from `splits` and
ActAdd at matched ‖Δh‖ from `magnitude`). Every edit is a `flowsteer.patching.Patch`. Also: contrast directions
from two prompt sets (difference in means, ActAdd, directional ablation; `contrast`) for any behaviour, and vector
files (single vectors, llama.cpp control vectors, steering-vectors-style safetensors; `vector_files`).
See docs/steering.md."""

from flowsteer.steering.compare import SteeringComparison, compare_steering
from flowsteer.steering.contrast import (
    DiffInMeans,
    ablation_patches,
    actadd_patches,
    diff_in_means,
    mean_token_activation,
    text_mean_difference,
)
from flowsteer.steering.evaluate import Scores, SteeringScorer, coherence
from flowsteer.steering.magnitude import added_norm, matched_actadd, measured_norm
from flowsteer.steering.multilayer import GRAPH_STRATEGIES, graph_features, graph_steerer
from flowsteer.steering.protocol import SteeringSettings, ThemeSteering, compare_theme, prepare_theme
from flowsteer.steering.schedules import SCHEDULES, Constant, Exponential, Linear
from flowsteer.steering.splits import SteeringSplits, load_prompts, split_prompts, split_texts, steering_splits
from flowsteer.steering.steerer import MODES, FeatureSteerer
from flowsteer.steering.themes import (
    ThemeFeatures,
    load_themes,
    rank_theme_features,
    rank_themes,
    standardised_mean_difference,
)
from flowsteer.steering.units import feature_units, typical_activations
from flowsteer.steering.vector_files import (
    load_control_vector,
    load_direction,
    load_layer_vectors,
    load_vector,
    save_control_vector,
    save_layer_vectors,
    save_vector,
    vector_patches,
)

__all__ = [
    "MODES",
    "SCHEDULES",
    "GRAPH_STRATEGIES",
    "Constant",
    "DiffInMeans",
    "Exponential",
    "FeatureSteerer",
    "Linear",
    "Scores",
    "SteeringSettings",
    "SteeringSplits",
    "ThemeSteering",
    "SteeringComparison",
    "SteeringScorer",
    "ThemeFeatures",
    "ablation_patches",
    "actadd_patches",
    "added_norm",
    "compare_theme",
    "load_prompts",
    "matched_actadd",
    "mean_token_activation",
    "measured_norm",
    "prepare_theme",
    "split_prompts",
    "split_texts",
    "steering_splits",
    "text_mean_difference",
    "coherence",
    "compare_steering",
    "diff_in_means",
    "feature_units",
    "graph_features",
    "graph_steerer",
    "load_control_vector",
    "load_direction",
    "load_layer_vectors",
    "load_themes",
    "load_vector",
    "rank_theme_features",
    "rank_themes",
    "save_control_vector",
    "save_layer_vectors",
    "save_vector",
    "standardised_mean_difference",
    "typical_activations",
    "vector_patches",
]
