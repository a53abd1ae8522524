"""Bad inputs fail at once with a message naming the input, the limit and the fix (issue 14).

Prompts longer than the context, non-finite or wrong-width vectors, damaged vector, checkpoint and
invertible-map files; hooks never outlive any of these errors. (Damaged SAE banks: test_saes.py.)
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from flowsteer.invertible import coupling_flow, load_map, save_map
from flowsteer.patching import (
    AddVector,
    Clamp,
    ClampFeatures,
    FromSource,
    Function,
    Patch,
    ProjectOut,
    Replace,
    RescaleFeatures,
    Scale,
    generate_with_patches,
    run_with_patches,
)
from flowsteer.patching.inputs import left_pad, tokenize
from flowsteer.saes.checkpoint import load_checkpoint, save_checkpoint
from flowsteer.saes.splice import SAEReconstruction
from flowsteer.steering.vector_files import load_vector, save_vector
from tests.conftest import hooks_attached

PROMPTS = ["The cat sat on the mat.", "Hi"]


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def recorder():
    """A patch that records whether any forward pass reached it."""
    calls = []
    return calls, Patch("0/res", lambda activation, context: calls.append(1) or activation)


def test_a_prompt_longer_than_the_context_fails_before_any_forward_pass(tiny):
    limit = tiny.cfg.n_ctx
    long_text = "word " * limit  # text was silently cut to n_ctx tokens before
    count = len(tokenize(tiny, [long_text])[0])
    assert count > limit
    calls, patch = recorder()
    with pytest.raises(ValueError, match=rf"prompt 1 is {count} tokens long but tiny-llama reads at most "
                                         rf"n_ctx={limit} tokens; shorten it or truncate it to at most {limit}"):
        run_with_patches(tiny, ["Hi", long_text], [patch])
    ids = torch.randint(3, 259, (2, limit + 1))
    with pytest.raises(ValueError, match=rf"prompt 0 is {limit + 1} tokens long .*n_ctx={limit}"):
        run_with_patches(tiny, ids, [patch])
    with pytest.raises(ValueError, match=rf"prompt 0 is {count} tokens long"):
        generate_with_patches(tiny, long_text, [patch], max_new_tokens=2)
    assert not calls and hooks_attached(tiny) == 0
    # padding wider than the context is fine: only real tokens count
    padded = left_pad([torch.tensor([5, 6, 7])], 0, width=limit + 4)
    assert run_with_patches(tiny, padded).shape[1] == limit + 4


def test_prompt_plus_new_tokens_must_fit_the_context(tiny):
    limit = tiny.cfg.n_ctx
    ids = torch.randint(3, 259, (1, limit - 3))
    calls, patch = recorder()
    with pytest.raises(ValueError, match=rf"prompt 0 \({limit - 3} tokens\) plus max_new_tokens=10 needs {limit + 7} "
                                         rf"positions, 7 more than tiny-llama's n_ctx={limit}; lower max_new_tokens to "
                                         r"3 or shorten the prompt by 7 tokens"):
        generate_with_patches(tiny, ids, [patch], max_new_tokens=10)
    assert not calls and hooks_attached(tiny) == 0
    assert len(generate_with_patches(tiny, ids, max_new_tokens=3, stop_at_eos=False).tokens[0]) == 3


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda bad: AddVector(bad), "AddVector's vector"),
        (lambda bad: Replace(bad), "Replace's value"),
        (lambda bad: ProjectOut(bad), "ProjectOut's directions"),
        (lambda bad: Clamp(bad, 1.0), "Clamp's direction"),
        (lambda bad: FromSource(bad), "FromSource's basis"),
    ],
)
def test_non_finite_vectors_are_rejected_when_built(tiny, build, name):
    bad = torch.randn(tiny.cfg.d_model)
    bad[[3, 7]] = torch.tensor([float("nan"), float("inf")])
    with pytest.raises(ValueError, match=rf"{name} holds 2 NaN/inf values of {tiny.cfg.d_model} \(first at index 3\)"
                                         r".*torch.nan_to_num"):
        build(bad)


def test_non_finite_numbers_are_rejected_when_built(tiny):
    vector = torch.randn(tiny.cfg.d_model)
    with pytest.raises(ValueError, match="AddVector's scale is nan; pass a finite number"):
        AddVector(vector, float("nan"))
    with pytest.raises(ValueError, match="Clamp's value is inf; pass a finite number"):
        Clamp(vector, float("inf"))
    with pytest.raises(ValueError, match="Scale's factor is -inf"):
        Scale(float("-inf"))
    sae = StandardSAE(StandardSAEConfig(d_in=tiny.cfg.d_model, d_sae=8))
    with pytest.raises(ValueError, match="RescaleFeatures's factor holds 1 NaN/inf values of 2"):
        RescaleFeatures(sae, [0, 1], torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="ClampFeatures's value holds 1 NaN/inf values of 1, which would"):
        ClampFeatures(sae, [0], float("inf"))
    with pytest.raises(ValueError, match=r"Replace's value holds 5 NaN/inf values of 6 \(first at index \(0, 1\)\)"):
        Replace(torch.tensor([[0.0, float("nan"), float("inf")], [float("nan")] * 3]))


def test_a_vector_of_the_wrong_width_names_the_patch_the_site_and_both_widths(tiny):
    d = tiny.cfg.d_model
    wrong = torch.randn(d + 1)
    sae = StandardSAE(StandardSAEConfig(d_in=d + 1, d_sae=8))
    for intervention in [AddVector(wrong), Replace(wrong), ProjectOut(wrong), Clamp(wrong, 1.0), FromSource(wrong),
                         RescaleFeatures(sae, [0]), SAEReconstruction(sae)]:
        name = type(intervention).__name__
        message = (rf"{name} at 2/mlp was built for activations of width {d + 1}, but blocks.2.hook_mlp_out is {d} "
                   rf"wide \(d_model of tiny-llama\); rebuild it from a vector, direction, SAE or map of width {d}")
        with pytest.raises(ValueError, match=message):
            run_with_patches(tiny, PROMPTS, [Patch("2/mlp", intervention)])
        assert hooks_attached(tiny) == 0
    with pytest.raises(ValueError, match=r"AddVector at 1/res was built for activations of width"):
        generate_with_patches(tiny, PROMPTS, [Patch("1/res", AddVector(wrong), "generated")], max_new_tokens=3)
    assert hooks_attached(tiny) == 0
    # interventions that take any width are not checked; right widths pass
    assert Function(lambda a, c: a).width is None and Scale(2.0).width is None
    run_with_patches(tiny, PROMPTS, [Patch("2/mlp", AddVector(torch.randn(d))), Patch("2/mlp", Scale(0.5))])


def test_load_vector_rejects_non_finite_and_damaged_files(tmp_path):
    path = tmp_path / "v.safetensors"
    at = re.escape(str(path))
    save_vector(path, torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(ValueError, match=rf"the vector in {at} holds 1 NaN/inf values of 3 \(first at index 1\)"):
        load_vector(path)
    save_vector(path, torch.arange(64.0))
    truncate(path)
    with pytest.raises(ValueError, match=rf"{at} is truncated or not a safetensors file .*save_vector"):
        load_vector(path)
    npy = tmp_path / "v.npy"
    np.save(npy, np.ones(64, dtype=np.float32))
    truncate(npy)
    with pytest.raises(ValueError, match=rf"{re.escape(str(npy))} is truncated or not a NumPy array file .*save_"):
        load_vector(npy)


def test_a_damaged_training_checkpoint_names_the_file(tmp_path):
    folder = save_checkpoint(tmp_path / "run.checkpoint", {"w": torch.ones(64, 8)}, {"step": 3})
    at = re.escape(str(folder))
    truncate(folder / "state.safetensors")
    with pytest.raises(ValueError, match=rf"{at}/state.safetensors is truncated .*delete {at} and train from"):
        load_checkpoint(folder)
    save_checkpoint(folder, {"w": torch.ones(64, 8)}, {"step": 3})
    (folder / "state.json").write_text('{"step": ')
    with pytest.raises(ValueError, match=rf"cannot read {at}/state.json \(JSONDecodeError"):
        load_checkpoint(folder)


def test_a_damaged_invertible_map_names_the_file(tiny, tmp_path):
    folder = save_map(tmp_path / "map", coupling_flow(tiny.cfg.d_model, hidden=8), "1/res", tiny)
    at = re.escape(str(folder))
    weights = (folder / "weights.safetensors").read_bytes()
    truncate(folder / "weights.safetensors")
    with pytest.raises(ValueError, match=rf"{at}/weights.safetensors is truncated .*fit it again and save it"):
        load_map(folder, tiny)
    (folder / "weights.safetensors").write_bytes(weights)
    (folder / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match=rf"{at}/config.json holds a list, not a flowsteer.invertible config"):
        load_map(folder, tiny)
    (folder / "config.json").write_text("{")
    with pytest.raises(ValueError, match=rf"cannot read {at}/config.json"):
        load_map(folder, tiny)
