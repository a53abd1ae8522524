"""Feature flow (arXiv 2502.03032, SAE Match arXiv 2410.07656): data-free matching of SAE features
across layers and modules, flow graphs, and their data-driven analyses.

Every function takes the SAEs as ``Mapping[Site, SAE]`` (sae_lens SAE objects). See docs/flow.md.
"""

from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.classes import (
    CLASSES,
    PAPER_THRESHOLDS,
    ChanceThresholds,
    FixedThresholds,
    QuantileThresholds,
    ThresholdRule,
    classify,
)
from flowsteer.flow.folding import activation_scales, feature_scales, fold, matching_vectors
from flowsteer.flow.graph import FlowGraph
from flowsteer.flow.labels import FeatureLabels, load_or_compute
from flowsteer.flow.matching import Matches, compose, permutation_match, topk_cosine
from flowsteer.flow.scores import LayerScores, add_permutations, layer_scores, model_scores
from flowsteer.flow.seeds import SeedChoice, pick_seed
from flowsteer.flow.stats import FlowStatistics, flow_statistics
from flowsteer.flow.topology import predecessor_sites, residual_sites

__all__ = [
    "CLASSES",
    "ChanceThresholds",
    "FeatureLabels",
    "FixedThresholds",
    "PAPER_THRESHOLDS",
    "FlowGraph",
    "FlowStatistics",
    "LayerScores",
    "Matches",
    "QuantileThresholds",
    "SeedChoice",
    "ThresholdRule",
    "activation_scales",
    "add_permutations",
    "build_flow_graph",
    "classify",
    "compose",
    "feature_scales",
    "flow_statistics",
    "fold",
    "layer_scores",
    "load_or_compute",
    "matching_vectors",
    "model_scores",
    "permutation_match",
    "pick_seed",
    "predecessor_sites",
    "residual_sites",
    "topk_cosine",
]
