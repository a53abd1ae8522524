"""Saving and loading steering vectors: safetensors or NumPy ``.npy`` (never pickle), validated: a
damaged file, a tensor that is not one vector, a wrong length or NaN/inf values raise ValueError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor

from flowsteer.patching.interventions import finite_tensor
from flowsteer.paths import atomic_path, read_safetensors


def save_vector(path: str | os.PathLike, vector: Float[Tensor, " d"], **metadata: str) -> None:
    """Write ``vector`` under the key ``"vector"`` of a safetensors file, atomically."""
    path = Path(path)
    tensor = vector.detach().to("cpu", torch.float32).contiguous()
    with atomic_path(path) as tmp:
        save_file({"vector": tensor}, tmp, metadata={k: str(v) for k, v in metadata.items()})


def load_vector(path: str | os.PathLike, d_model: int | None = None) -> Float[Tensor, " d"]:
    """Read a 1-D vector from ``.safetensors`` (key ``"vector"`` or its only tensor) or ``.npy``.

    With ``d_model`` the length is checked against the model's residual width.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vector file at {path}")
    fix = "write it again (flowsteer.vectors.save_vector)"
    if path.suffix == ".npy":
        try:
            vector = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (ValueError, EOFError) as exc:
            raise ValueError(f"{path} is truncated or not a NumPy array file ({exc}); {fix}") from exc
    elif path.suffix == ".safetensors":
        tensors = read_safetensors(path, fix)
        if "vector" in tensors:
            vector = tensors["vector"]
        elif len(tensors) == 1:
            vector = next(iter(tensors.values()))
        else:
            raise ValueError(f"{path} holds {sorted(tensors)}; store the vector under the key 'vector'")
    else:
        raise ValueError(f"{path}: use a .safetensors or .npy file (pickled formats are not loaded)")
    vector = vector.float().squeeze()
    if vector.ndim != 1:
        raise ValueError(f"{path} holds a tensor of shape {tuple(vector.shape)}; expected one vector [d_model]")
    if d_model is not None and vector.shape[0] != d_model:
        raise ValueError(f"{path} holds a vector of length {vector.shape[0]} but the model's d_model is {d_model}")
    return finite_tensor(vector, f"the vector in {path}")
