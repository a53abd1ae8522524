"""`patches_to_fwd_hooks`: flowsteer patches inside TransformerLens's own run_with_hooks / model.hooks."""

from __future__ import annotations

import pytest
import torch

from flowsteer import patches_to_fwd_hooks
from flowsteer.patching import AddVector, FromSource, Patch, ProjectOut, Scale, encode, run_with_patches
from tests.conftest import hooks_attached

PROMPT = "The cat sat on the mat and looked at the bird."


def _patches(d_model: int) -> list[Patch]:
    gen = torch.Generator().manual_seed(0)
    return [
        Patch("1/res", AddVector(torch.randn(d_model, generator=gen), 3.0)),  # every column
        Patch("2/mlp", Scale(0.0), [-1]),  # the last token only
        Patch("0/att", ProjectOut(torch.randn(d_model, generator=gen)), slice(1, None)),  # all but the first
        Patch("1/res", Scale(1.5), "prompt"),  # composes after the first patch at 1/res
    ]


def test_same_logits_as_run_with_patches_and_hooks_removed(tiny):
    tokens = encode(tiny, [PROMPT, PROMPT]).tokens  # equal prompts: no padding
    patches = _patches(tiny.cfg.d_model)
    clean = tiny(tokens)
    ours = run_with_patches(tiny, tokens, patches)
    assert not torch.allclose(ours, clean, atol=1e-3)  # the patches do change the output
    hooks = patches_to_fwd_hooks(tiny, patches)
    names = ["blocks.0.hook_attn_out", "blocks.1.hook_resid_post", "blocks.2.hook_mlp_out"]
    assert [name for name, _ in hooks] == names
    theirs = tiny.run_with_hooks(tokens, fwd_hooks=hooks)
    assert torch.allclose(theirs, ours, atol=1e-5, rtol=1e-5)
    assert hooks_attached(tiny) == 0
    with tiny.hooks(fwd_hooks=hooks):
        assert hooks_attached(tiny) == 3
        again = tiny(tokens)
    assert torch.allclose(again, ours, atol=1e-5, rtol=1e-5)
    assert hooks_attached(tiny) == 0 and torch.equal(tiny(tokens), clean)


def test_positions_are_columns_of_the_activation(tiny):
    tokens = encode(tiny, PROMPT).tokens
    last_only = patches_to_fwd_hooks(tiny, [Patch("1/res", Scale(0.0), [-1])])
    cache = {}

    def keep(activation, hook):
        cache["resid"] = activation.detach().clone()

    tiny.run_with_hooks(tokens, fwd_hooks=[*last_only, ("blocks.1.hook_resid_post", keep)])
    resid = cache["resid"][0]
    assert torch.all(resid[-1] == 0) and bool((resid[:-1].abs().sum(-1) > 0).all())


def test_generated_and_source_patches_are_refused(tiny):
    with pytest.raises(ValueError, match="never sees generated tokens"):
        patches_to_fwd_hooks(tiny, [Patch("1/res", Scale(2.0), "generated")])
    with pytest.raises(ValueError, match="interchange"):
        patches_to_fwd_hooks(tiny, [Patch("1/res", FromSource())])
    with pytest.raises(ValueError, match="out of range"):
        patches_to_fwd_hooks(tiny, [Patch(f"{tiny.cfg.n_layers}/res", Scale(2.0))])
