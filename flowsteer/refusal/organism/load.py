"""``load_model("smollm2-135m-refusal")``: the refusal organism, made on first use and cached.

It is made by adding the low-rank adapter that ships with flowsteer to the base model's weights (seconds), or,
when that adapter does not match this code's recipe and data, by training it (minutes on 2 CPU cores, with a
progress bar; the same as ``flowsteer organism build``). A lock file beside the cache makes concurrent first
uses wait for one build.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import REFUSAL_ORGANISM, hooked_from_hf_dir
from flowsteer.refusal.organism.adapter import install_shipped_adapter, shipped_adapter_problem
from flowsteer.refusal.organism.build import build_refusal_organism
from flowsteer.refusal.organism.cache import organism_dir, stale_reason

log = logging.getLogger(__name__)


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
            problem = shipped_adapter_problem()
            if problem is None:
                log.warning("installing the refusal organism %s from its shipped adapter (seconds): %s",
                            REFUSAL_ORGANISM, reason)
                install_shipped_adapter(device)
            else:
                log.warning(
                    "building the refusal organism %s at %s (once, minutes on CPU): %s, and %s",
                    REFUSAL_ORGANISM, path, reason, problem,
                )
                build_refusal_organism(device=device, progress=progress)
    return path


def load_refusal_organism(device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    """The refusal organism as an unprepared `HookedTransformer` (`load_model` prepares it), built and
    cached first when needed (training in float32 on ``device``)."""
    path = ensure_refusal_organism(device)
    return hooked_from_hf_dir(path, device=device, dtype=dtype, prepend_bos=SMOLLM2_135M_INSTRUCT.prepend_bos)
