"""The one patching API every flowsteer method goes through.

A `Patch` puts an `Intervention` at a `Site` on chosen token positions. `run_with_patches`,
`generate_with_patches`, `cache_sites`, `interchange` and `patching_sweep` run a model with patches;
hooks live only for the duration of each call. `patches_to_fwd_hooks` hands patches to TransformerLens's
own ``run_with_hooks`` / ``model.hooks``.
"""

from flowsteer.patching.activations import collect_activations, position_mask
from flowsteer.patching.effects import EffectLog, PatchEffect
from flowsteer.patching.features import ClampFeatures, FeatureEdit, RescaleFeatures, decoder_directions
from flowsteer.patching.fwd_hooks import patches_to_fwd_hooks
from flowsteer.patching.generate import Generation, generate_with_patches, sample_next
from flowsteer.patching.hooks import HookSession, SiteActivations
from flowsteer.patching.inputs import Inputs, TokenBatch, encode, encode_pair
from flowsteer.patching.interventions import (
    AddVector,
    Clamp,
    Context,
    FromSource,
    Function,
    Intervention,
    ProjectOut,
    Replace,
    Scale,
)
from flowsteer.patching.patch import Patch
from flowsteer.patching.run import cache_sites, interchange, patching_sweep, run_from_layer, run_with_patches

__all__ = [
    "AddVector",
    "Clamp",
    "ClampFeatures",
    "Context",
    "EffectLog",
    "FeatureEdit",
    "FromSource",
    "Function",
    "Generation",
    "HookSession",
    "Inputs",
    "Intervention",
    "Patch",
    "PatchEffect",
    "ProjectOut",
    "Replace",
    "RescaleFeatures",
    "Scale",
    "SiteActivations",
    "TokenBatch",
    "cache_sites",
    "collect_activations",
    "decoder_directions",
    "encode",
    "encode_pair",
    "generate_with_patches",
    "interchange",
    "patches_to_fwd_hooks",
    "patching_sweep",
    "position_mask",
    "run_from_layer",
    "run_with_patches",
    "sample_next",
]
