"""Where the refusal organism is cached and whether the cached one is current.

The cache is a Hugging Face folder (safetensors weights, tokenizer) under ``flowsteer.paths.cache_dir("models")``
with a ``manifest.json`` holding the recipe, data hash, precision and training log. A cache made by another
recipe version or from another base model is stale and gets remade (`flowsteer.refusal.organism.load`).
"""

from __future__ import annotations

import json
from pathlib import Path

from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import REFUSAL_ORGANISM, ModelLoadError
from flowsteer.paths import cache_dir

# Bump when the recipe (data, targets, training) changes so that stale caches are rebuilt.
REFUSAL_RECIPE_VERSION = 7
BUILD_COMMAND = "flowsteer organism build"


def organism_dir(name: str = REFUSAL_ORGANISM) -> Path:
    """Where the organism ``name`` is (or will be) cached."""
    return cache_dir("models") / name


def read_manifest(path: Path) -> dict:
    """The organism's manifest; `ModelLoadError` saying how to build it when there is none."""
    manifest = path / "manifest.json"
    if not manifest.is_file() or not (path / "config.json").is_file():
        raise ModelLoadError(
            f"the refusal model organism {REFUSAL_ORGANISM!r} is not made yet (nothing at {path}). "
            f"load_model({REFUSAL_ORGANISM!r}) makes it on first use; from the shell: flowsteer organism install "
            f"(the shipped adapter, seconds) or {BUILD_COMMAND} (train it, minutes on CPU)"
        )
    return json.loads(manifest.read_text())


def stale_reason(path: Path) -> str | None:
    """Why the organism cached at ``path`` must be (re)built, or None when it is current."""
    try:
        manifest = read_manifest(path)
    except ModelLoadError:
        return "it is not built yet"
    if manifest.get("recipe_version") != REFUSAL_RECIPE_VERSION:
        return f"the cached build has recipe version {manifest.get('recipe_version')}, not {REFUSAL_RECIPE_VERSION}"
    if manifest.get("base_model", {}).get("sha256") != SMOLLM2_135M_INSTRUCT.sha256:
        return "the cached build comes from another base model"
    return None
