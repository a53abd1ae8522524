"""The flowsteer command on the tiny random model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowsteer.cli import main
from flowsteer.models.tiny import TINY_MODEL
from flowsteer.steering.vector_files import load_vector, save_vector


def test_info_lists_layers_and_sites(capsys):
    assert main(["info", "--model", TINY_MODEL, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "layers       4 (0..3)" in out and "blocks.0.hook_mlp_out" in out


def test_generate_compare_prints_unsteered_then_steered_text(tmp_path, capsys):
    from flowsteer import chat_prompt, load_model
    from flowsteer.patching import AddVector, Patch, generate_with_patches

    direction = torch.randn(64, generator=torch.Generator().manual_seed(0)) * 50
    vector = tmp_path / "v.safetensors"
    save_vector(vector, direction, note="test")
    args = ["generate", "Hello", "--model", TINY_MODEL, "--device", "cpu", "--max-new-tokens", "8"]
    assert main(args) == 0
    plain = capsys.readouterr().out.strip()
    assert main(args + ["--steer", f"1/res:{vector}:2", "--compare"]) == 0
    head, unsteered, steered = capsys.readouterr().out.split("---")[::2]
    assert head == "" and unsteered.strip() == plain and steered.strip() != plain
    model = load_model(TINY_MODEL, device="cpu")
    expected = generate_with_patches(model, chat_prompt(model, "Hello"), [Patch("1/res", AddVector(direction, 2.0))],
                                     max_new_tokens=8, seed=0)
    assert steered.strip() == expected.texts[0].strip()


def test_generate_rejects_a_vector_of_the_wrong_width(tmp_path, capsys):
    vector = tmp_path / "v.npy"
    np.save(vector, np.ones(10, dtype=np.float32))
    code = main(["generate", "Hi", "--model", TINY_MODEL, "--device", "cpu", "--steer", f"1/res:{vector}:1"])
    assert code == 2
    assert "length 10 but the model's d_model is 64" in capsys.readouterr().err


def test_vectors_round_trip_and_refuse_pickles(tmp_path):
    path = tmp_path / "v.safetensors"
    save_vector(path, torch.arange(5.0))
    assert torch.equal(load_vector(path, d_model=5), torch.arange(5.0))
    pickled = tmp_path / "v.pt"
    torch.save(torch.ones(3), pickled)
    with pytest.raises(ValueError, match="pickled formats are not loaded"):
        load_vector(pickled)
