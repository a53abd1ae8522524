"""Steering vectors in files, out and in (safetensors or NumPy, never pickle; validated on load): one vector
(`save_vector` / `load_vector`), and per-layer vectors in other tools' files: llama.cpp control vectors (GGUF) and
safetensors dicts ``{layer: vector}`` (the steering-vectors library's ``layer_activations``).

Every vector here lives on the residual stream leaving a block: key ``N`` is the site ``N/res``
(``blocks.N.hook_resid_post``), and applying a file means adding each vector at its site on every
token (`vector_patches`), as llama.cpp does.

**llama.cpp numbering** (read in llama.cpp's source as vendored in the llama-cpp-python 0.3.36
sdist; the same code in github.com/ggml-org/llama.cpp):

- ``common/common.cpp`` ``common_control_vector_load_one`` (l. 1909-1954): tensor ``direction.N``
  is stored at offset ``n_embd * (N - 1)`` of the control buffer ("layer 1 at [0]");
  ``direction.0`` is an error ("invalid (zero) direction tensor layer index").
- ``src/llama-adapter.cpp`` ``llama_adapter_cvec::apply`` (l. 126-132) fills ``tensors[il]`` from
  offset ``n_embd * (il - 1)`` for ``il >= 1``; ``apply_to`` (l. 24-31) adds ``tensors[il]`` to the
  tensor it is given. So ``direction.N`` is added in layer ``il = N``.
- ``src/models/llama.cpp`` (l. 220-224): ``cur = ggml_add(ctx0, cur, ffn_inp); ...
  cur = build_cvec(cur, il); cb(cur, "l_out", il)``: after the MLP's residual add, i.e. to the
  output of block ``il`` (0-based), the input of block ``il + 1``.

Hence ``direction.N`` = flowsteer ``N/res`` = TransformerLens ``blocks.N.hook_resid_post``, for
N = 1 .. n_layers - 1; ``0/res`` cannot be written. Note that llama.cpp's ``cvector-generator``
(``tools/cvector-generator/pca.hpp`` l. 305) and repeng *compute* ``direction.N`` from block N-1's
output but llama.cpp *adds* it at block N's output; a file is applied here where llama.cpp applies it.

**steering-vectors** (0.12.2) has no file format of its own: a ``SteeringVector`` is
``layer_activations: dict[int, Tensor]`` with ``layer_type="decoder_block"``, each added to the
output of decoder block N (= ``N/res``). The safetensors file here is that dict with the layer
numbers as keys (``"12"``) and ``layer_type`` in the metadata:
``SteeringVector({int(k): v for k, v in load_file(path).items()})`` rebuilds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from flowsteer.extras import require
from flowsteer.patching import AddVector, Patch
from flowsteer.patching.interventions import finite_tensor
from flowsteer.patching.patch import PositionSpec
from flowsteer.paths import atomic_path, read_safetensors
from flowsteer.sites import Site


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
    fix = "write it again (flowsteer.steering.vector_files.save_vector)"
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


ARCHITECTURE = "controlvector"
LAYER_TYPE = "decoder_block"
_DIRECTION = re.compile(r"^direction\.(\d+)$")

LayerVectors = dict[Site, Float[Tensor, " d_model"]]


def _residual_site(key: Site | str | int) -> Site:
    """``N``, ``"N/res"`` or ``Site(N)`` -> ``N/res``; ``"N/pre"`` (the same activation) -> ``(N-1)/res``."""
    site = Site(key) if isinstance(key, int) else Site.parse(key)
    if site.kind == "resid_pre" and site.layer > 0:
        return Site(site.layer - 1)
    if site.kind != "resid_post":
        raise ValueError(
            f"{site}: these files hold vectors for the residual stream leaving a block (N/res), not {site.kind}; "
            "save a vector for another site alone with save_vector"
        )
    return site


def _checked(vectors: Mapping[Site | str | int, Tensor]) -> LayerVectors:
    """Vectors keyed by residual sites, float32 on the CPU, all [d_model] and finite."""
    if not vectors:
        raise ValueError("no vectors to save; pass {layer: vector}, e.g. {6: v} for 6/res")
    out: LayerVectors = {}
    for key, vector in vectors.items():
        site = _residual_site(key)
        if site in out:
            raise ValueError(f"two vectors for {site} (N/res and (N+1)/pre are the same activation); pass one")
        tensor = torch.as_tensor(vector).detach().to("cpu", torch.float32).squeeze()
        if tensor.ndim != 1:
            raise ValueError(f"the vector for {site} has shape {tuple(tensor.shape)}; expected one vector [d_model]")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"the vector for {site} has non-finite values")
        out[site] = tensor.contiguous()
    sizes = {site: v.shape[0] for site, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"vectors differ in length: { {str(s): n for s, n in sizes.items()} }; all must be d_model")
    return dict(sorted(out.items()))


def _check_width(vectors: LayerVectors, d_model: int | None, path: Path) -> LayerVectors:
    if not vectors:
        raise ValueError(f"{path} holds no layer vectors")
    width = next(iter(vectors.values())).shape[0]
    if d_model is not None and width != d_model:
        raise ValueError(f"{path} holds vectors of length {width} but the model's d_model is {d_model}")
    return vectors


def save_control_vector(
    path: str | os.PathLike, vectors: Mapping[Site | str | int, Tensor], *, model_hint: str = ""
) -> Path:
    """Write a llama.cpp control vector: GGUF architecture ``controlvector``, one F32 tensor
    ``direction.N`` [d_model] per site ``N/res`` (N >= 1), ``controlvector.model_hint`` and
    ``controlvector.layer_count`` (as llama.cpp's cvector-generator writes them), atomically.

    Args:
        vectors: ``{site or layer: vector}``; ``6``, ``"6/res"``, ``Site(6)`` and ``"7/pre"`` all mean ``6/res``.
        model_hint: the model the vectors are for (llama.cpp writes the GGUF architecture, e.g.
            ``"llama"``; its loader does not read it).
    """
    path = Path(path)
    checked = _checked(vectors)
    if Site(0) in checked:
        raise ValueError(
            "llama.cpp cannot apply a control vector at 0/res (direction.0 is rejected by its loader); "
            "drop layer 0 or move the vector to 1/res"
        )
    gguf = _gguf()
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint)
        writer.add_int32(f"{ARCHITECTURE}.layer_count", len(checked))
        for site, vector in checked.items():
            writer.add_tensor(f"direction.{site.layer}", vector.numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _gguf():
    return require("gguf", "gguf", "reading and writing llama.cpp control vectors")


def _field_text(reader, key: str) -> str | None:
    field = reader.get_field(key)
    return None if field is None else bytes(field.parts[-1]).decode("utf-8", errors="replace")


def load_control_vector(path: str | os.PathLike, d_model: int | None = None) -> LayerVectors:
    """Read a llama.cpp control vector: ``{Site(N): direction.N}`` (``N/res``, see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no control vector file at {path}")
    gguf = _gguf()
    reader = gguf.GGUFReader(path)
    architecture = _field_text(reader, "general.architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(f"{path} is a GGUF of architecture {architecture!r}, not a {ARCHITECTURE!r} file")
    vectors: LayerVectors = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if match is None or int(match.group(1)) == 0:
            raise ValueError(f"{path}: tensor {tensor.name!r} is not direction.N with N >= 1 (llama.cpp rejects it)")
        if tensor.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            raise ValueError(f"{path}: {tensor.name} is {tensor.tensor_type.name}; expected F32 (or F16)")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        vectors[Site(int(match.group(1)))] = torch.from_numpy(data.copy())
    return _check_width(_checked(vectors) if vectors else {}, d_model, path)


def save_layer_vectors(path: str | os.PathLike, vectors: Mapping[Site | str | int, Tensor], **metadata: str) -> Path:
    """Write ``{"N": vector}`` to a safetensors file (steering-vectors' ``layer_activations`` with
    ``layer_type="decoder_block"``: vector N is added after block N, ``N/res``), atomically."""
    path = Path(path)
    checked = _checked(vectors)
    tensors = {str(site.layer): vector for site, vector in checked.items()}
    notes = {"layer_type": LAYER_TYPE, **{k: str(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=notes)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    with safe_open(path, framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata() or {}


def load_layer_vectors(path: str | os.PathLike, d_model: int | None = None) -> LayerVectors:
    """Read a safetensors file of ``{"N": vector}`` as ``{Site(N): vector}`` (see `save_layer_vectors`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vector file at {path}")
    tensors, metadata = _read_safetensors(path)
    layer_type = metadata.get("layer_type", LAYER_TYPE)
    if layer_type != LAYER_TYPE:
        raise ValueError(f"{path} holds vectors for layer_type={layer_type!r}; only {LAYER_TYPE!r} (N/res) is read")
    keys = sorted(tensors)
    if not keys or not all(key.isdigit() for key in keys):
        raise ValueError(
            f"{path} holds tensors {keys}; a layer-vector file is keyed by layer numbers ('6', '12'). "
            "Read a single vector with flowsteer.steering.vector_files.load_vector"
        )
    return _check_width(_checked({int(key): tensors[key] for key in keys}), d_model, path)


def _row(matrix: Tensor, layer: int | None, path: Path) -> Tensor:
    if layer is None:
        raise ValueError(f"{path} holds one vector per layer, shape {tuple(matrix.shape)}; pass layer=N")
    if not 0 <= layer < matrix.shape[0]:
        raise IndexError(f"{path} has rows 0..{matrix.shape[0] - 1}; layer={layer} is not one of them")
    return matrix[layer]


def load_direction(
    path: str | os.PathLike, layer: int | None = None, d_model: int | None = None
) -> Float[Tensor, " d_model"]:
    """One direction from a file computed elsewhere (e.g. a refusal direction), to put in a `Patch`.

    Reads a single vector (``.safetensors``/``.npy``, as `flowsteer.steering.vector_files.load_vector`), or
    ``layer`` of a per-layer file: a llama.cpp control vector (``.gguf``: ``direction.{layer}``), a
    layer-keyed safetensors dict (``"{layer}"``), or a ``[n_layers, d_model]`` matrix (row
    ``layer``). Which site to patch is the caller's choice, e.g.
    ``Patch("12/res", ProjectOut(load_direction("refusal.safetensors")))``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no vector file at {path}")
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        found = load_control_vector(path, d_model)
        if layer is None and len(found) == 1:
            return next(iter(found.values()))
        if layer is None or Site(layer) not in found:
            raise ValueError(f"{path} holds direction.N for N in {[s.layer for s in found]}; pass one as layer=N")
        return found[Site(layer)]
    if suffix in (".pt", ".pth", ".pkl", ".pickle"):
        raise ValueError(
            f"{path} is a pickle; flowsteer does not unpickle files. Convert it once where you trust it: "
            "flowsteer.steering.vector_files.save_vector('direction.safetensors', torch.load(path, weights_only=True))"
        )
    raw = None
    if suffix == ".safetensors":
        tensors, _ = _read_safetensors(path)
        if tensors and all(key.isdigit() for key in tensors):
            found = load_layer_vectors(path, d_model)
            if layer is None and len(found) == 1:
                return next(iter(found.values()))
            if layer is None or Site(layer) not in found:
                raise ValueError(f"{path} holds layers {[s.layer for s in found]}; pass one as layer=N")
            return found[Site(layer)]
        raw = tensors.get("vector", next(iter(tensors.values())) if len(tensors) == 1 else None)
    elif suffix == ".npy":
        raw = torch.from_numpy(np.load(path, allow_pickle=False))
    if raw is not None and raw.squeeze().ndim == 2:
        vector = _row(raw.squeeze().float(), layer, path)
        if d_model is not None and vector.shape[0] != d_model:
            raise ValueError(f"{path} holds vectors of length {vector.shape[0]} but the model's d_model is {d_model}")
        return vector.clone()
    if layer is not None:
        raise ValueError(f"{path} holds a single vector, not one per layer; drop layer={layer}")
    return load_vector(path, d_model)


def vector_patches(
    vectors: Mapping[Site | str | int, Tensor], scale: float = 1.0, positions: PositionSpec = "all"
) -> list[Patch]:
    """One `AddVector` patch per site (``h + scale * v``): a loaded file applied as llama.cpp applies
    a control vector with strength ``scale`` (every token by default)."""
    return [Patch(site, AddVector(vector, scale), positions) for site, vector in _checked(vectors).items()]
