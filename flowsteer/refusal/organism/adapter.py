"""The refusal organism's low-rank adapter: saved with every build, shipped inside the package, applied on first use.

A build (`flowsteer.refusal.organism.build_refusal_organism`) trains the adapter and saves it beside the merged weights.
``flowsteer organism export-adapter`` copies it, with the build's manifest, to ``data/organisms/<name>/`` (shipped
in the wheel). On first use `install_shipped_adapter` adds it to the base model's weights, which takes seconds
instead of a fine-tune; it is used only when its manifest matches this code's recipe version, the base model and
the refusal data, and the file's sha256 matches the manifest; otherwise `shipped_adapter_problem` says why and
the organism is trained from scratch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import converted_gguf_dir
from flowsteer.paths import atomic_dir, atomic_path, write_json
from flowsteer.refusal.organism.cache import REFUSAL_RECIPE_VERSION, organism_dir, read_manifest
from flowsteer.refusal.organism.lora import AdapterError, apply_adapter_tensors
from flowsteer.refusal.organism.recipe import OrganismRecipe
from flowsteer.refusal.prompts import data_sha256
from flowsteer.resources import data_dir

ADAPTER_FILE = "adapter.safetensors"
MANIFEST_FILE = "manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_adapter(path: str | os.PathLike, tensors: dict[str, Tensor], recipe: OrganismRecipe) -> dict:
    """Write the adapter tensors as safetensors (atomically); return the manifest entry that verifies them."""
    scale = recipe.adapter_alpha / recipe.adapter_rank
    metadata = {"rank": str(recipe.adapter_rank), "alpha": str(recipe.adapter_alpha), "scale": repr(scale)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return {
        "file": ADAPTER_FILE,
        "sha256": file_sha256(path),
        "rank": recipe.adapter_rank,
        "alpha": recipe.adapter_alpha,
        "scale": scale,
        "layers": len(tensors) // 2,
        "parameters": sum(t.numel() for t in tensors.values()),
    }


def shipped_dir(name: str = REFUSAL_ORGANISM) -> Path:
    """Where the package keeps the organism's adapter and manifest (``data/organisms/<name>``)."""
    return data_dir() / "organisms" / name


def shipped_adapter_problem(folder: Path | None = None) -> str | None:
    """Why the shipped adapter cannot be used here, or None when it can."""
    folder = folder or shipped_dir()
    manifest_path, adapter_path = folder / MANIFEST_FILE, folder / ADAPTER_FILE
    if not manifest_path.is_file() or not adapter_path.is_file():
        return f"no adapter ships at {folder}"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return f"{manifest_path} is unreadable ({error})"
    if manifest.get("recipe_version") != REFUSAL_RECIPE_VERSION:
        return f"the shipped adapter has recipe version {manifest.get('recipe_version')}, not {REFUSAL_RECIPE_VERSION}"
    if manifest.get("base_model", {}).get("sha256") != SMOLLM2_135M_INSTRUCT.sha256:
        return "the shipped adapter was trained on another base model"
    if manifest.get("data_sha256") != data_sha256():
        return "the refusal data changed since the shipped adapter was trained"
    if file_sha256(adapter_path) != manifest.get("adapter", {}).get("sha256"):
        return f"{adapter_path} does not match the sha256 in its manifest (corrupt or replaced)"
    return None


def install_shipped_adapter(device: str | torch.device = "cpu", folder: Path | None = None) -> dict:
    """Apply the shipped adapter to the base model's weights and cache the result as the organism (seconds);
    return the cached manifest (the shipped one, with ``source`` and install time added)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folder or shipped_dir()
    problem = shipped_adapter_problem(folder)
    if problem is not None:
        raise AdapterError(f"cannot use the shipped adapter: {problem}; build the organism: flowsteer organism build")
    started = time.perf_counter()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    try:
        tensors = load_file(folder / ADAPTER_FILE)
    except (SafetensorError, OSError) as error:
        raise AdapterError(f"{folder / ADAPTER_FILE} is unreadable ({error}); reinstall flowsteer") from error
    source = converted_gguf_dir(SMOLLM2_135M_INSTRUCT)
    tokenizer = AutoTokenizer.from_pretrained(source)
    hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)
    apply_adapter_tensors(hf_model, tensors, manifest["adapter"]["scale"])
    manifest |= {
        "source": "shipped adapter",
        "installed": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with atomic_dir(organism_dir(REFUSAL_ORGANISM)) as tmp:
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(folder / ADAPTER_FILE, tmp / ADAPTER_FILE)
        manifest["install_seconds"] = time.perf_counter() - started
        write_json(tmp / MANIFEST_FILE, manifest)
    return manifest


def export_adapter(target: Path | None = None) -> Path:
    """Copy the cached build's adapter and manifest to ``target`` (default: the shipped folder of this source
    checkout), for maintainers who retrained the organism. Returns the folder."""
    cached = organism_dir(REFUSAL_ORGANISM)
    manifest = read_manifest(cached)
    if manifest.get("source") != "trained" or "adapter" not in manifest:
        raise AdapterError(f"the cached organism at {cached} was not trained with an adapter here; run "
                           "flowsteer organism build first")
    target = target or shipped_dir()
    with atomic_dir(target) as tmp:
        shutil.copyfile(cached / ADAPTER_FILE, tmp / ADAPTER_FILE)
        write_json(tmp / MANIFEST_FILE, manifest)
    return target
