"""Invertible maps on the embedded SmolLM2: inverse error on real activations, δ = 0 leaves logits alone."""

from __future__ import annotations

import pytest
import torch

from flowsteer import chat_prompts
from flowsteer.invertible import (
    InvertibleIntervention,
    collect_activations,
    coupling_flow,
    data_init,
    identity_map,
    iresnet_map,
    orthogonal_map,
)
from flowsteer.patching import Patch, run_with_patches

pytestmark = pytest.mark.real_model

SITE = "12/res"
INSTRUCTIONS = [
    "Tell me a story about a dog.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain photosynthesis briefly.",
    "How do I bake bread at home?",
    "Give me three tips for studying.",
    "Describe the ocean at night.",
    "What is 12 times 7?",
]


@pytest.fixture(scope="module")
def prompts(real_model):
    return chat_prompts(real_model, INSTRUCTIONS)


@pytest.fixture(scope="module")
def clean_logits(real_model, prompts):
    with torch.no_grad():
        return run_with_patches(real_model, prompts)


@pytest.fixture(scope="module")
def activations(real_model, prompts):
    return collect_activations(real_model, prompts, SITE)  # every token but the attention sink


def nontrivial(factory, activations, dtype):
    torch.manual_seed(0)
    bijection = factory(activations.shape[1], dtype=dtype)
    data_init(bijection, activations)
    if factory is coupling_flow:  # fresh couplings are the identity: give them real scales and shifts
        with torch.no_grad():
            for layer in bijection.layers[1::2]:
                layer.conditioner[-1].weight.normal_(0, 0.02)
    return bijection.eval()


@pytest.mark.parametrize("factory", [iresnet_map, coupling_flow])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_error_on_real_activations(activations, factory, dtype):
    assert activations.shape[0] >= 200
    bijection = nontrivial(factory, activations, dtype)
    x = activations.to(dtype)
    with torch.no_grad():
        z = bijection(x)
        back = bijection.inverse(z)
    assert (z - x).norm() > 0.1 * x.norm()  # the map moves activations substantially
    relative = (back - x).norm(dim=-1) / x.norm(dim=-1)
    assert relative.max() <= 1e-5, float(relative.max())


@pytest.mark.parametrize("factory", [identity_map, orthogonal_map, iresnet_map, coupling_flow])
def test_zero_shift_reproduces_unpatched_logits(real_model, prompts, clean_logits, activations, factory):
    if factory in (identity_map, orthogonal_map):
        bijection = factory(activations.shape[1]).eval()
    else:
        bijection = nontrivial(factory, activations, torch.float64)
    intervention = InvertibleIntervention.shift(bijection, torch.zeros(activations.shape[1]))
    with torch.no_grad():
        patched = run_with_patches(real_model, prompts, [Patch(SITE, intervention, "all")])
    assert (patched - clean_logits).abs().max() <= 1e-4
