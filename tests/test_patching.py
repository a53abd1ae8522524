"""The patching API on the tiny model: properties, positions, hooks' lifetime, interchange, effects."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsteer.patching import (
    AddVector,
    Clamp,
    EffectLog,
    FromSource,
    Function,
    Patch,
    ProjectOut,
    Replace,
    Scale,
    TokenBatch,
    cache_sites,
    encode,
    interchange,
    patching_sweep,
    run_with_patches,
)
from flowsteer.sites import KINDS, Site, SiteError
from tests.conftest import hooks_attached

PROMPTS = ["The cat sat on the mat.", "Hi", "A much longer prompt about rivers and mountains."]

sites = st.builds(Site, st.integers(0, 3), st.sampled_from(KINDS))
positions = st.one_of(
    st.sampled_from(["all", "prompt", "generated"]),
    st.lists(st.integers(-2, 1), min_size=1, max_size=3),
)


def identity(activation, context):
    return activation


@settings(max_examples=25, deadline=None)
@given(site=sites, where=positions)
def test_identity_intervention_leaves_logits_bit_identical(tiny, site, where):
    clean = run_with_patches(tiny, PROMPTS)
    patched = run_with_patches(tiny, PROMPTS, [Patch(site, identity, where)])
    assert torch.equal(clean, patched)


@settings(max_examples=15, deadline=None)
@given(site=sites)
def test_interchange_with_itself_changes_nothing(tiny, site):
    clean = run_with_patches(tiny, PROMPTS)
    swapped = interchange(tiny, PROMPTS, PROMPTS, [Patch(site, FromSource())])
    assert torch.equal(clean, swapped)


@pytest.mark.parametrize("site", ["1/res", "3/res"])
def test_interchange_of_a_whole_residual_stream_gives_the_source_logits(tiny, site):
    base, source = ["The cat sat on the mat."], ["A dog ran in the park!!"]
    assert encode(tiny, base).tokens.shape == encode(tiny, source).tokens.shape  # same length: no padding
    swapped = interchange(tiny, base, source, [Patch(site, FromSource())])
    assert torch.allclose(swapped, run_with_patches(tiny, source), atol=1e-5)
    assert not torch.allclose(swapped, run_with_patches(tiny, base), atol=1e-2)


@settings(max_examples=15, deadline=None)
@given(first=sites, second=sites, seed=st.integers(0, 1000))
def test_patches_at_two_sites_compose_in_forward_order(tiny, first, second, seed):
    gen = torch.Generator().manual_seed(seed)
    u, v = torch.randn(64, generator=gen), torch.randn(64, generator=gen)
    a, b = Patch(first, AddVector(u)), Patch(second, AddVector(v))
    ab = run_with_patches(tiny, PROMPTS, [a, b])
    if first == second:  # same site: the two edits add up
        assert torch.allclose(ab, run_with_patches(tiny, PROMPTS, [Patch(first, AddVector(u + v))]), atol=1e-5)
    else:  # different sites: list order is irrelevant, the forward pass orders them
        assert torch.equal(ab, run_with_patches(tiny, PROMPTS, [b, a]))


def test_replacing_a_downstream_residual_screens_off_upstream_patches(tiny):
    target = torch.randn(64)
    late = Patch("2/res", Replace(target))
    alone = run_with_patches(tiny, PROMPTS, [late])
    with_upstream = run_with_patches(tiny, PROMPTS, [Patch("0/mlp", Scale(3.0)), late])
    assert torch.equal(alone, with_upstream)
    assert not torch.equal(alone, run_with_patches(tiny, PROMPTS))


def test_explicit_positions_follow_real_tokens_under_left_padding(tiny):
    seen = {}

    def record(activation, context):
        seen["mask"] = context.mask.clone()
        seen["positions"] = context.positions.clone()
        return activation

    batch = encode(tiny, PROMPTS)
    run_with_patches(tiny, batch, [Patch("1/res", record, [0, -1])])
    mask, lengths = seen["mask"], batch.prompt_lengths
    width = batch.tokens.shape[1]
    for row, length in enumerate(lengths.tolist()):
        edited = mask[row].nonzero().flatten().tolist()
        assert edited == [width - length, width - 1]
    assert (seen["positions"] == batch.positions).all()


def test_prompt_and_generated_masks(tiny):
    masks = {}

    def record(name):
        def fn(activation, context):
            masks[name] = context.mask
            return activation

        return fn

    patches = [Patch("0/res", record("prompt"), "prompt"), Patch("0/res", record("gen"), "generated")]
    run_with_patches(tiny, PROMPTS, patches)
    batch = encode(tiny, PROMPTS)
    assert torch.equal(masks["prompt"], batch.attention_mask.bool())
    assert "gen" not in masks  # no generated tokens in a plain forward pass: never called


def test_position_out_of_range_names_the_valid_range(tiny):
    with pytest.raises(IndexError, match=r"valid prompt positions are 0\.\.1 or -2\.\.-1"):
        run_with_patches(tiny, PROMPTS, [Patch("0/res", identity, [5])])


def test_invalid_site_names_the_valid_layers(tiny):
    with pytest.raises(SiteError, match=r"valid layers are 0\.\.3"):
        run_with_patches(tiny, PROMPTS, [Patch("4/res", identity)])


def test_wrong_shape_from_an_intervention_is_reported(tiny):
    with pytest.raises(ValueError, match="returned shape"):
        run_with_patches(tiny, PROMPTS, [Patch("0/res", lambda a, c: a[..., :3])])


def test_hooks_never_outlive_a_call_even_when_an_intervention_raises(tiny):
    def boom(activation, context):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_with_patches(tiny, PROMPTS, [Patch("0/res", AddVector(torch.ones(64))), Patch("2/mlp", boom)])
    assert hooks_attached(tiny) == 0
    from flowsteer.patching import generate_with_patches

    with pytest.raises(RuntimeError, match="boom"):
        generate_with_patches(tiny, PROMPTS, [Patch("1/att", boom)], max_new_tokens=3)
    assert hooks_attached(tiny) == 0


def test_builtin_interventions_do_what_they_say(tiny):
    sites_ = ["1/res"]
    _, before = run_with_patches(tiny, PROMPTS, cache=sites_)
    h = before["1/res"]
    direction = torch.randn(64)
    unit = direction / direction.norm()

    def after(intervention):
        return run_with_patches(tiny, PROMPTS, [Patch("1/res", intervention)], cache=sites_)[1]["1/res"]

    assert torch.allclose(after(AddVector(direction, scale=2.0)), h + 2 * direction, atol=1e-5)
    assert torch.allclose(after(Scale(0.5)), 0.5 * h, atol=1e-6)
    assert (after(ProjectOut(direction)) @ unit).abs().max() < 1e-4
    assert torch.allclose(after(Clamp(direction, 7.0)) @ unit, torch.full(h.shape[:2], 7.0), atol=1e-4)
    assert torch.allclose(after(Replace(direction)), direction.expand_as(h))
    two = torch.randn(2, 64)
    projected = after(ProjectOut(two))
    assert (projected @ torch.linalg.qr(two.T)[0]).abs().max() < 1e-4


def test_from_source_within_a_subspace_exchanges_only_that_component(tiny):
    base, source = ["The cat sat on the mat."], ["A dog ran in the park!!"]
    basis = torch.randn(3, 64)
    q = torch.linalg.qr(basis.T)[0]
    _, b = run_with_patches(tiny, base, cache=["2/res"])
    _, s = run_with_patches(tiny, source, cache=["2/res"])
    _, mixed = interchange(tiny, base, source, [Patch("2/res", FromSource(basis))], cache=["2/res"])
    h = mixed["2/res"]
    assert torch.allclose(h @ q, s["2/res"] @ q, atol=1e-4)
    orth = torch.eye(64) - q @ q.T
    assert torch.allclose(h @ orth, b["2/res"] @ orth, atol=1e-4)


def test_interchange_rejects_positions_the_source_lacks(tiny):
    with pytest.raises(ValueError, match="source prompt is shorter"):
        interchange(tiny, ["a much longer base prompt"], ["short"], [Patch("0/res", FromSource())])
    interchange(tiny, ["a much longer base prompt"], ["short"], [Patch("0/res", FromSource(), [-1])])


def test_patching_sweep_matches_individual_interchanges(tiny):
    base, source = ["The cat sat on the mat."], ["The dog sat on the rug."]
    sites_ = [Site(0), Site(2, "mlp_out"), Site(3, "resid_pre")]
    target = 42

    def metric(logits):
        return logits[:, -1, target].mean()

    grid = patching_sweep(tiny, base, source, sites_, metric, positions=[-1, -3])
    for i, site in enumerate(sites_):
        for j, position in enumerate([-1, -3]):
            logits = interchange(tiny, base, source, [Patch(site, FromSource(), [position])])
            assert torch.isclose(grid[i, j], metric(logits), atol=1e-4)


def test_cache_sites_stops_after_the_last_needed_layer(tiny):
    calls = []
    with tiny.hooks(fwd_hooks=[("blocks.3.hook_resid_post", lambda a, hook: calls.append(1))]):
        acts = cache_sites(tiny, PROMPTS, ["1/res", "0/att"])
        assert not calls
        run_with_patches(tiny, PROMPTS)
        assert calls
    assert set(acts) == {Site(1), Site(0, "attn_out")}
    assert acts["1/res"].shape == (3, encode(tiny, PROMPTS).tokens.shape[1], 64)
    assert torch.equal(acts.positions, encode(tiny, PROMPTS).positions)


def test_effect_log_measures_delta_norms(tiny):
    vector = torch.zeros(64)
    vector[0] = 3.0
    log = EffectLog()
    batch = encode(tiny, PROMPTS)
    run_with_patches(tiny, batch, [Patch("1/res", AddVector(vector), "all"), Patch("2/res", Scale(1.0))], record=log)
    added, unchanged = log.effects
    n_real = int(batch.attention_mask.sum())
    summary = added.summary()
    assert summary["tokens"] == n_real and summary["tokens_changed"] == n_real
    assert summary["mean_delta_norm"] == pytest.approx(3.0, rel=1e-5)
    assert unchanged.summary()["tokens_changed"] == 0
    only_last = EffectLog()
    run_with_patches(tiny, batch, [Patch("1/res", AddVector(vector), [-1])], record=only_last)
    assert only_last.summary()["locations_changed"] == len(PROMPTS)


def test_token_batch_rows_drop_unneeded_padding(tiny):
    batch = encode(tiny, PROMPTS)
    short = batch[1:2]
    assert short.tokens.shape[1] == int(batch.prompt_lengths[1]) and short.attention_mask.all()
    assert isinstance(short, TokenBatch)


def test_trainable_intervention_gets_gradients_through_the_frozen_model(tiny):
    shift = torch.zeros(64, requires_grad=True)
    logits = run_with_patches(tiny, PROMPTS, [Patch("1/res", Function(lambda a, c: a + shift))])
    logits[:, -1, 5].sum().backward()
    assert shift.grad is not None and shift.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.parameters())
