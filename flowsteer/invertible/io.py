"""Saving and loading invertible maps and interventions: safetensors weights + a JSON config.

A saved artefact is a directory holding ``config.json`` (what to build, the site, the positions,
the model's ``d_model``) and ``weights.safetensors`` (the state dict). Both are written atomically;
loading checks the format, ``d_model`` against the model and the site against its layers. No pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformer_lens import HookedTransformer

from flowsteer.invertible.bijection import Bijection, build_bijection, tensor_dtype
from flowsteer.invertible.intervention import InvertibleIntervention
from flowsteer.invertible.masks import build_mask
from flowsteer.invertible.targets import build_target
from flowsteer.models.tl import has_site
from flowsteer.patching import Patch
from flowsteer.patching.patch import PositionRange
from flowsteer.paths import atomic_dir, read_json, read_safetensors, write_json
from flowsteer.sites import Site

FORMAT = "flowsteer.invertible"
VERSION = 1
CONFIG, WEIGHTS = "config.json", "weights.safetensors"


def _positions_to_json(positions: str | tuple[int, ...] | PositionRange) -> dict[str, Any]:
    if isinstance(positions, str):
        return {"type": positions}
    if isinstance(positions, PositionRange):
        return {"type": "range", "start": positions.start, "stop": positions.stop}
    return {"type": "list", "values": list(positions)}


def _positions_from_json(spec: dict[str, Any]) -> Any:
    if spec["type"] == "range":
        return slice(spec["start"], spec["stop"])
    if spec["type"] == "list":
        return spec["values"]
    return spec["type"]


def _save(path: str | os.PathLike, module: nn.Module, config: dict[str, Any]) -> Path:
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in module.state_dict().items()}
    with atomic_dir(path) as tmp:
        save_file(tensors, tmp / WEIGHTS, metadata={"format": FORMAT})
        write_json(tmp / CONFIG, config)
    return Path(path)


def _read(path: str | os.PathLike, kind: str, model: HookedTransformer) -> tuple[dict[str, Any], dict, Site]:
    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise FileNotFoundError(f"{path} is not a saved flowsteer {kind}: expected {CONFIG} and {WEIGHTS} in it")
    fix = f"fit it again and save it with save_{kind}"
    config = read_json(path / CONFIG, fix)
    if not isinstance(config, dict):
        raise ValueError(f"{path / CONFIG} holds a {type(config).__name__}, not a {FORMAT} config; {fix}")
    if config.get("format") != FORMAT or config.get("kind") != kind:
        raise ValueError(
            f"{path / CONFIG} holds format={config.get('format')!r} kind={config.get('kind')!r}; "
            f"expected a {FORMAT} {kind} (save it with save_{kind})"
        )
    if config.get("version", 0) > VERSION:
        raise ValueError(f"{path} was saved by a newer flowsteer (version {config['version']} > {VERSION}); upgrade")
    if config["d_model"] != model.cfg.d_model:
        raise ValueError(
            f"{path} was fitted for d_model={config['d_model']} ({config.get('model_name')}) but this model has "
            f"d_model={model.cfg.d_model}; load it with the model it was trained on"
        )
    site = Site.parse(config["site"]).validate(model.cfg.n_layers)
    if not has_site(model, site):
        raise ValueError(f"{path}: site {site} ({site.hook_name}) is not a hook point of this model")
    return config, read_safetensors(path / WEIGHTS, fix), site


def _build(config: dict[str, Any]) -> Bijection:
    """The map of a config, in the dtype it was saved in (float64 by default)."""
    dtype = getattr(torch, config.get("dtype", "float32"), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {config.get('dtype')!r} in the saved config")
    return build_bijection(config["bijection"]).to(dtype)


def _load_state(module: nn.Module, tensors: dict, path: str | os.PathLike) -> None:
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"{path}: weight {name} has shape {tuple(tensor.shape)}, "
                f"the config builds {tuple(expected[name].shape)}"
            )
    module.load_state_dict(tensors)


def _header(kind: str, site: Site, model: HookedTransformer, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "site": str(site),
        "hook_name": site.hook_name,
        "d_model": model.cfg.d_model,
        "model_name": model.cfg.model_name,
        "metadata": metadata,
    }


def save_intervention(path: str | os.PathLike, patch: Patch, model: HookedTransformer, **metadata: Any) -> Path:
    """Save a patch whose intervention is an `InvertibleIntervention` (map, mask, target, site, positions)."""
    intervention = patch.intervention
    if not isinstance(intervention, InvertibleIntervention):
        raise TypeError(f"save_intervention saves InvertibleIntervention patches, got {type(intervention).__name__}")
    if intervention.d != model.cfg.d_model:
        raise ValueError(f"the intervention has d={intervention.d} but the model's d_model is {model.cfg.d_model}")
    config = _header("intervention", patch.site.validate(model.cfg.n_layers), model, metadata)
    config |= {
        "positions": _positions_to_json(patch.positions),
        "bijection": intervention.bijection.config(),
        "dtype": str(tensor_dtype(intervention.bijection)).removeprefix("torch."),
        "mask": intervention.mask.config(),
        "target": intervention.target.config(),
    }
    return _save(path, intervention, config)


def load_intervention(path: str | os.PathLike, model: HookedTransformer) -> Patch:
    """The saved patch, validated against ``model``, in eval mode on the model's device."""
    config, tensors, site = _read(path, "intervention", model)
    intervention = InvertibleIntervention(
        _build(config), build_target(config["target"]), build_mask(config["mask"])
    )
    _load_state(intervention, tensors, path)
    intervention.to(model.cfg.device).eval()
    return Patch(site, intervention, _positions_from_json(config["positions"]))


def save_map(
    path: str | os.PathLike, bijection: Bijection, site: Site | str, model: HookedTransformer, **metadata: Any
) -> Path:
    """Save a map fitted at ``site`` of ``model``."""
    if bijection.d != model.cfg.d_model:
        raise ValueError(f"the map has d={bijection.d} but the model's d_model is {model.cfg.d_model}")
    config = _header("map", Site.parse(site).validate(model.cfg.n_layers), model, metadata)
    config["bijection"] = bijection.config()
    config["dtype"] = str(tensor_dtype(bijection)).removeprefix("torch.")
    return _save(path, bijection, config)


def load_map(path: str | os.PathLike, model: HookedTransformer) -> tuple[Bijection, Site]:
    """The saved map (eval mode, on the model's device) and the site it was fitted at."""
    config, tensors, site = _read(path, "map", model)
    bijection = _build(config)
    _load_state(bijection, tensors, path)
    return bijection.to(model.cfg.device).eval(), site



