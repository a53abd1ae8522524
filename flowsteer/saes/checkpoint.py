"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds ``state.safetensors`` (SAE parameters, optimizer moments, dead-latent
counters) and ``state.json`` (step, round, input scales, optimizer settings, the training config).
It is written atomically, so an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from flowsteer.paths import atomic_dir, read_json, read_safetensors, write_json

TENSORS, META = "state.safetensors", "state.json"


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state as flat tensors (``optim/<param>/<name>``) and JSON-able settings."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{index}/{name}"] = value.detach().contiguous()
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Inverse of `optimizer_to_flat`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` to the folder ``path`` atomically."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / TENSORS)
        write_json(tmp / META, meta)
    return path


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint folder written by `save_checkpoint`; ValueError naming the file if it is damaged."""
    path = Path(path)
    if not (path / TENSORS).is_file() or not (path / META).is_file():
        raise FileNotFoundError(f"no training checkpoint in {path} (expected {TENSORS} and {META})")
    fix = f"the run cannot resume from it: delete {path} and train from the start"
    return read_safetensors(path / TENSORS, fix, device=str(device)), read_json(path / META, fix)


def has_checkpoint(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / TENSORS).is_file() and (path / META).is_file()
