"""Model organisms: models fine-tuned from an embedded model to show a behaviour, cached and then
loaded by name like any other model.

``smollm2-135m-refusal`` is SmolLM2-135M-Instruct fine-tuned to refuse harmful requests (see
docs/organism.md). ``load_model("smollm2-135m-refusal")`` makes it on first use, by adding the low-rank
adapter that ships with flowsteer to the base weights (seconds), or, when that adapter does not match this
code, by training it (minutes on 2 CPU cores, with a progress bar; the same as ``flowsteer organism build``),
and stores it
under ``flowsteer.paths.cache_dir("models")`` as a Hugging Face folder (safetensors weights) with a
``manifest.json`` holding the data hash, hyper-parameters and training log. A cache built by another
recipe version or base model is rebuilt.
"""

from __future__ import annotations

import fcntl
import json
import logging
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import ModelLoadError, hooked_from_hf_dir, register_model
from flowsteer.paths import cache_dir

log = logging.getLogger(__name__)

REFUSAL_ORGANISM = "smollm2-135m-refusal"
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


def ensure_refusal_organism(device: torch.device | str = "cpu", *, progress: bool = True) -> Path:
    """The cache folder of a current refusal organism, made first when it is absent or stale: from the adapter
    that ships with flowsteer when that is current (seconds), else by training it (minutes).

    A lock file beside the cache makes concurrent callers wait for one build instead of racing.
    """
    path = organism_dir()
    if stale_reason(path) is None:
        return path
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reason = stale_reason(path)  # another process may have built it while we waited
        if reason is not None:
            from flowsteer.organism.adapter import install_shipped_adapter, shipped_adapter_problem

            problem = shipped_adapter_problem()
            if problem is None:
                log.warning("installing the refusal organism %s from its shipped adapter (seconds): %s",
                            REFUSAL_ORGANISM, reason)
                install_shipped_adapter(device)
            else:
                from flowsteer.organism.build import build_refusal_organism

                log.warning(
                    "building the refusal organism %s at %s (once, minutes on CPU): %s, and %s",
                    REFUSAL_ORGANISM, path, reason, problem,
                )
                build_refusal_organism(device=device, progress=progress)
    return path


@register_model(REFUSAL_ORGANISM)
def load_refusal_organism(device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    """The refusal organism as an unprepared `HookedTransformer` (`load_model` prepares it), built and
    cached first when needed (training in float32 on ``device``)."""
    path = ensure_refusal_organism(device)
    return hooked_from_hf_dir(path, device=device, dtype=dtype, prepend_bos=SMOLLM2_135M_INSTRUCT.prepend_bos)
