"""Feature Flow's published numbers (arXiv 2502.03032; Gemma 2 2B, Gemma Scope 16k JumpReLU SAEs),
kept next to the code so every analysis reports its result beside the paper's."""

from __future__ import annotations

# Table 1: deactivation by matching method (1,894 features over two layers).
TABLE_1 = {
    "top-1 cosine": {"mean_activation_change": 0.75, "success_rate": 0.65},
    "top-1 Pearson": {"mean_activation_change": 0.74, "success_rate": 0.65},
    "exhaustive search (upper bound)": {"mean_activation_change": 0.83, "success_rate": 0.73},
}

# §5.1: "From MLP" vs "From MLP & ATT" differ in s^R, s^M, s^A in this share of Mann-Whitney tests
# (p < 0.001); with MLP active in both groups, groups differ in s^R in 87% of tests.
MLP_VS_MLP_ATT = {"res": 0.67, "mlp": 0.72, "att": 1.00}
MLP_ACTIVE_IN_BOTH_DIFFER_IN_RES = 0.87
ALPHA = 0.001

# Fig. 13: P(a feature seen in group A (row) is also seen in group B (column)), over all layers;
# rows and columns in the order of flowsteer.flow.groups.GROUPS.
FIG_13 = [
    [1, 0.49, 0.32, 0.19, 0.26, 0.17, 0.10, 0.11],
    [0.72, 1, 0.29, 0.20, 0.33, 0.22, 0.091, 0.13],
    [0.82, 0.50, 1, 0.25, 0.45, 0.18, 0.21, 0.18],
    [0.82, 0.59, 0.42, 1, 0.33, 0.45, 0.30, 0.28],
    [0.75, 0.66, 0.50, 0.22, 1, 0.22, 0.16, 0.22],
    [0.76, 0.72, 0.32, 0.49, 0.35, 1, 0.21, 0.33],
    [0.82, 0.51, 0.67, 0.57, 0.46, 0.37, 1, 0.42],
    [0.74, 0.62, 0.50, 0.47, 0.53, 0.50, 0.37, 1],
]

# §5.2: deactivation layers (of 26) and sample sizes.
DEACTIVATION_LAYERS = (6, 12, 18)
DEACTIVATION_TEXTS, DEACTIVATION_TOKENS, DEACTIVATION_TARGETS = 35, 5, 25
GROUP_TEXTS, GROUP_TOKENS = 250, 5


def scaled_layers(n_layers: int, layers: tuple[int, ...] = DEACTIVATION_LAYERS, of: int = 26) -> list[int]:
    """The paper's layers at the same relative depth in a model with ``n_layers`` layers."""
    return sorted({min(n_layers - 1, round(layer * n_layers / of)) for layer in layers})
