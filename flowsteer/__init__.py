"""flowsteer: feature flow, feature steering and invertible-map interventions on TransformerLens
models, all through one patching API.

The nouns a script or notebook needs are importable from here: models and the patching API load with the
package; the heavier parts (SAE banks, flow graphs, steering, invertible maps, evaluation) on first use of one
of their names. Importing flowsteer changes no global state (no warning filters, no logging handlers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from flowsteer.models import (
    DEFAULT_MODEL,
    available_models,
    chat_prompt,
    chat_prompts,
    load_model,
    register_model,
    tiny_model,
)
from flowsteer.patching import (
    AddVector,
    Clamp,
    ClampFeatures,
    Context,
    EffectLog,
    FromSource,
    Function,
    Generation,
    Intervention,
    Patch,
    ProjectOut,
    Replace,
    RescaleFeatures,
    Scale,
    TokenBatch,
    cache_sites,
    collect_activations,
    generate_with_patches,
    interchange,
    patches_to_fwd_hooks,
    patching_sweep,
    run_with_patches,
)
from flowsteer.sites import FeatureId, Site, SiteError

__version__ = "0.1.0"

# Names loaded on first use: {name: module}.
_LAZY = {
    "SAEBank": "flowsteer.saes",
    "SAETrainingConfig": "flowsteer.saes",
    "train_saes": "flowsteer.saes",
    "default_bank": "flowsteer.saes",
    "evaluate_bank": "flowsteer.saes",
    "FlowGraph": "flowsteer.flow",
    "build_flow_graph": "flowsteer.flow",
    "pick_seed": "flowsteer.flow",
    "PAPER_THRESHOLDS": "flowsteer.flow",
    "FeatureSteerer": "flowsteer.steering",
    "compare_steering": "flowsteer.steering",
    "diff_in_means": "flowsteer.steering",
    "InvertibleIntervention": "flowsteer.invertible",
    "Bijection": "flowsteer.invertible",
    "compute_dtype": "flowsteer.models.precision",
    "resolve_precision": "flowsteer.models.precision",
}

if TYPE_CHECKING:
    from flowsteer.flow import PAPER_THRESHOLDS, FlowGraph, build_flow_graph, pick_seed
    from flowsteer.invertible import Bijection, InvertibleIntervention
    from flowsteer.models.precision import compute_dtype, resolve_precision
    from flowsteer.saes import SAEBank, SAETrainingConfig, default_bank, evaluate_bank, train_saes
    from flowsteer.steering import FeatureSteerer, compare_steering, diff_in_means


# Subpackages reachable as attributes (``fs.steering.load_themes()``), imported on first use.
_SUBPACKAGES = ("saes", "flow", "steering", "invertible", "evals", "refusal", "data")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"flowsteer.{name}")  # importing binds it on the package
    raise AttributeError(f"module 'flowsteer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBPACKAGES])


__all__ = [
    "AddVector",
    "Bijection",
    "Clamp",
    "ClampFeatures",
    "Context",
    "DEFAULT_MODEL",
    "EffectLog",
    "FeatureId",
    "FeatureSteerer",
    "FlowGraph",
    "FromSource",
    "Function",
    "Generation",
    "Intervention",
    "InvertibleIntervention",
    "PAPER_THRESHOLDS",
    "Patch",
    "ProjectOut",
    "Replace",
    "RescaleFeatures",
    "SAEBank",
    "SAETrainingConfig",
    "Scale",
    "Site",
    "SiteError",
    "TokenBatch",
    "__version__",
    "available_models",
    "build_flow_graph",
    "cache_sites",
    "chat_prompt",
    "chat_prompts",
    "collect_activations",
    "compare_steering",
    "compute_dtype",
    "default_bank",
    "diff_in_means",
    "evaluate_bank",
    "generate_with_patches",
    "interchange",
    "load_model",
    "patches_to_fwd_hooks",
    "patching_sweep",
    "pick_seed",
    "register_model",
    "resolve_precision",
    "run_with_patches",
    "tiny_model",
    "train_saes",
]
