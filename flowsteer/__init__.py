"""flowsteer: feature flow, feature steering and invertible-map interventions on TransformerLens
models, all through one patching API."""

import warnings as _warnings

_warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformer_lens(\..*)?")

from flowsteer.models import (  # noqa: E402
    DEFAULT_MODEL,
    available_models,
    chat_prompt,
    chat_prompts,
    load_model,
    register_model,
    tiny_model,
)
from flowsteer.patching import (  # noqa: E402
    AddVector,
    Clamp,
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
    generate_with_patches,
    interchange,
    patches_to_fwd_hooks,
    patching_sweep,
    run_with_patches,
)
from flowsteer.sites import FeatureId, Site, SiteError  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "AddVector",
    "Clamp",
    "Context",
    "EffectLog",
    "FeatureId",
    "FromSource",
    "Function",
    "Generation",
    "Intervention",
    "Patch",
    "ProjectOut",
    "Replace",
    "RescaleFeatures",
    "Scale",
    "Site",
    "SiteError",
    "TokenBatch",
    "available_models",
    "cache_sites",
    "chat_prompt",
    "chat_prompts",
    "generate_with_patches",
    "interchange",
    "load_model",
    "patches_to_fwd_hooks",
    "patching_sweep",
    "register_model",
    "run_with_patches",
    "tiny_model",
]
