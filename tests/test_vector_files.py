"""Per-layer vectors out to and in from llama.cpp control vectors (GGUF) and safetensors dicts."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from flowsteer.patching import AddVector, Patch, ProjectOut, run_with_patches
from flowsteer.sites import Site
from flowsteer.steering import (
    load_control_vector,
    load_direction,
    load_layer_vectors,
    save_control_vector,
    save_layer_vectors,
    vector_patches,
)
from flowsteer.steering.vector_files import save_vector

D = 48  # any width: nothing here knows the model's size


def vectors(layers=(1, 3, 7), d=D) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {layer: torch.randn(d, generator=gen) for layer in layers}


def text(reader: gguf.GGUFReader, key: str) -> str:
    return bytes(reader.get_field(key).parts[-1]).decode()


def test_gguf_is_a_llama_cpp_control_vector(tmp_path):
    path = save_control_vector(tmp_path / "cv.gguf", vectors(), model_hint="llama")
    reader = gguf.GGUFReader(path)
    assert text(reader, "general.architecture") == "controlvector"
    assert text(reader, "controlvector.model_hint") == "llama"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 3
    assert [t.name for t in reader.tensors] == ["direction.1", "direction.3", "direction.7"]
    for tensor, (layer, vector) in zip(reader.tensors, vectors().items(), strict=True):
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and list(tensor.shape) == [D]
        assert np.array_equal(np.asarray(tensor.data), vector.numpy()), layer
    loaded = load_control_vector(path, d_model=D)
    assert list(loaded) == [Site(1), Site(3), Site(7)]  # direction.N is N/res
    assert all(torch.equal(loaded[Site(n)], v) for n, v in vectors().items())


def test_gguf_written_by_another_tool_is_read(tmp_path):
    """A file laid out as repeng's export_gguf writes it (uint32 layer count, no flowsteer code)."""
    path = tmp_path / "repeng.gguf"
    writer = gguf.GGUFWriter(path, "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_uint32("controlvector.layer_count", 2)
    for layer, vector in vectors((5, 2)).items():
        writer.add_tensor(f"direction.{layer}", vector.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    loaded = load_control_vector(path)
    assert list(loaded) == [Site(2), Site(5)]
    assert torch.equal(loaded[Site(5)], vectors((5, 2))[5])
    assert torch.equal(load_direction(path, layer=2), vectors((5, 2))[2])


def test_gguf_refuses_what_llama_cpp_cannot_apply(tmp_path):
    with pytest.raises(ValueError, match="0/res"):
        save_control_vector(tmp_path / "a.gguf", vectors((0, 1)))
    with pytest.raises(ValueError, match="N/res"):
        save_control_vector(tmp_path / "b.gguf", {"3/mlp": torch.ones(D)})
    with pytest.raises(ValueError, match="same activation"):
        save_control_vector(tmp_path / "b.gguf", {"3/pre": torch.ones(D), 2: torch.ones(D)})
    with pytest.raises(ValueError, match="differ in length"):
        save_control_vector(tmp_path / "c.gguf", {1: torch.ones(D), 2: torch.ones(D + 1)})
    path = save_control_vector(tmp_path / "d.gguf", vectors())
    with pytest.raises(ValueError, match="d_model is 64"):
        load_control_vector(path, d_model=64)
    assert not (tmp_path / "a.gguf").exists()


def test_safetensors_layer_dict_round_trip(tmp_path):
    path = save_layer_vectors(tmp_path / "sv.safetensors", {"1/res": vectors()[1], "4/pre": vectors()[3]}, note="x")
    raw = load_file(path)  # the plain dict {layer: vector}, as steering-vectors' layer_activations
    assert sorted(raw) == ["1", "3"] and torch.equal(raw["3"], vectors()[3])
    loaded = load_layer_vectors(path, d_model=D)
    assert list(loaded) == [Site(1), Site(3)] and torch.equal(loaded[Site(1)], vectors()[1])
    assert torch.equal(load_direction(path, layer=3), vectors()[3])
    with pytest.raises(ValueError, match="pass one as layer=N"):
        load_direction(path)
    save_file({"1": torch.ones(D)}, tmp_path / "attn.safetensors", metadata={"layer_type": "self_attn"})
    with pytest.raises(ValueError, match="self_attn"):
        load_layer_vectors(tmp_path / "attn.safetensors")


def test_load_direction_from_single_vectors_and_matrices(tmp_path):
    direction = vectors((0,))[0]
    save_vector(tmp_path / "refusal.safetensors", direction)
    assert torch.equal(load_direction(tmp_path / "refusal.safetensors", d_model=D), direction)
    per_layer = torch.stack(list(vectors((0, 1, 2)).values()))  # [n_layers, d_model], e.g. one per layer
    np.save(tmp_path / "candidates.npy", per_layer.numpy())
    save_file({"directions": per_layer}, tmp_path / "candidates.safetensors")
    for name in ("candidates.npy", "candidates.safetensors"):
        assert torch.equal(load_direction(tmp_path / name, layer=2), per_layer[2])
        with pytest.raises(ValueError, match="pass layer=N"):
            load_direction(tmp_path / name)
    with pytest.raises(ValueError, match="single vector"):
        load_direction(tmp_path / "refusal.safetensors", layer=4)
    with pytest.raises(ValueError, match="does not unpickle"):
        (tmp_path / "direction.pt").write_bytes(b"not read")
        load_direction(tmp_path / "direction.pt")


def test_imported_vectors_steer_as_patches(tiny, tmp_path):
    d = tiny.cfg.d_model
    steer = {layer: 4 * v for layer, v in vectors((1, 2), d).items()}
    path = save_control_vector(tmp_path / "cv.gguf", steer)
    prompt = "The cat sat on the mat."
    clean = run_with_patches(tiny, prompt)
    imported = run_with_patches(tiny, prompt, vector_patches(load_control_vector(path, d), scale=0.5))
    direct = run_with_patches(tiny, prompt, [Patch(f"{n}/res", AddVector(v, 0.5)) for n, v in steer.items()])
    assert torch.equal(imported, direct) and not torch.allclose(imported, clean, atol=1e-3)
    ablated = run_with_patches(tiny, prompt, [Patch("2/res", ProjectOut(load_direction(path, layer=2, d_model=d)))])
    assert not torch.allclose(ablated, clean, atol=1e-4)
