"""Model organisms: models fine-tuned from an embedded model to show a behaviour, cached and then
loaded by name like any other model.

``smollm2-135m-refusal`` is SmolLM2-135M-Instruct fine-tuned to refuse harmful requests (see
docs/organism.md). It is built once on the user's machine (about 15 minutes on 2 CPU cores) with
``python -m flowsteer.cli organism build`` or `flowsteer.organism.build_refusal_organism`, and stored
under ``flowsteer.paths.cache_dir("models")`` as a Hugging Face folder (safetensors weights) with a
``manifest.json`` holding the data hash, hyper-parameters and measured metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import ModelLoadError, hooked_from_hf_dir, register_model
from flowsteer.paths import cache_dir

REFUSAL_ORGANISM = "smollm2-135m-refusal"
# Bump when the recipe (data, targets, training) changes so that stale caches are rebuilt.
REFUSAL_RECIPE_VERSION = 1
BUILD_COMMAND = "python -m flowsteer.cli organism build"


def organism_dir(name: str = REFUSAL_ORGANISM) -> Path:
    """Where the organism ``name`` is (or will be) cached."""
    return cache_dir("models") / name


def read_manifest(path: Path) -> dict:
    """The organism's manifest; `ModelLoadError` saying how to build it when there is none."""
    manifest = path / "manifest.json"
    if not manifest.is_file() or not (path / "config.json").is_file():
        raise ModelLoadError(
            f"the refusal model organism {REFUSAL_ORGANISM!r} is not built yet (nothing at {path}). Build it "
            f"once, about 15 minutes on 2 CPU cores: {BUILD_COMMAND}  (or, in Python: "
            "flowsteer.organism.build_refusal_organism())"
        )
    return json.loads(manifest.read_text())


@register_model(REFUSAL_ORGANISM)
def load_refusal_organism(device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    """The cached refusal organism as an unprepared `HookedTransformer` (`load_model` prepares it)."""
    path = organism_dir()
    manifest = read_manifest(path)
    if manifest.get("recipe_version") != REFUSAL_RECIPE_VERSION:
        raise ModelLoadError(
            f"the cached organism at {path} was built by recipe version {manifest.get('recipe_version')}, this "
            f"flowsteer uses version {REFUSAL_RECIPE_VERSION}; rebuild it: {BUILD_COMMAND}"
        )
    if manifest.get("base_model", {}).get("sha256") != SMOLLM2_135M_INSTRUCT.sha256:
        raise ModelLoadError(f"the cached organism at {path} was built from another base model; rebuild it: {BUILD_COMMAND}")
    return hooked_from_hf_dir(path, device=device, dtype=dtype, prepend_bos=SMOLLM2_135M_INSTRUCT.prepend_bos)
