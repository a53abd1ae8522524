"""The general intervention f⁻¹((1-m)⊙f(h) + m⊙z*) on the tiny model: reductions, δ = 0, targets, masks."""

from __future__ import annotations

import pytest
import torch

from flowsteer.invertible import (
    CoordinateMask,
    FixedLatent,
    InvertibleIntervention,
    SoftMask,
    coupling_flow,
    data_init,
    identity_map,
    iresnet_map,
    orthogonal_map,
)
from flowsteer.patching import (
    EffectLog,
    FromSource,
    Patch,
    cache_sites,
    encode_pair,
    generate_with_patches,
    interchange,
    run_with_patches,
)

BASE = ["The cat sat on the mat.", "Hi", "A much longer prompt about rivers."]
SOURCE = ["A dog ran in the park today!!!", "Hello there", "Another long prompt about the oceans."]
SITE = "1/res"


def real_columns(tiny):
    base, _ = encode_pair(tiny, BASE, SOURCE)
    return base.attention_mask.bool()


def fitted(bijection, tiny):
    acts = cache_sites(tiny, BASE + SOURCE, [SITE])
    data_init(bijection, acts[SITE][acts.positions >= 0])
    return bijection.eval()


def test_identity_map_with_full_mask_is_from_source(tiny):
    ours = interchange(tiny, BASE, SOURCE, [Patch(SITE, InvertibleIntervention.interchange(identity_map(64)))])
    reference = interchange(tiny, BASE, SOURCE, [Patch(SITE, FromSource())])
    real = real_columns(tiny)
    assert torch.equal(ours[real], reference[real])  # padding columns: FromSource also copies those


def test_identity_map_with_a_coordinate_subset_is_coordinate_patching(tiny):
    coordinates = [3, 10, 11, 40]
    keep = torch.zeros(64, dtype=torch.bool)
    keep[coordinates] = True

    def by_hand(activation, context):
        return torch.where(keep, context.source, activation)

    mask = CoordinateMask(64, coordinates)
    ours = interchange(tiny, BASE, SOURCE, [Patch(SITE, InvertibleIntervention.interchange(identity_map(64), mask))])
    reference = interchange(tiny, BASE, SOURCE, [Patch(SITE, by_hand)])
    real = real_columns(tiny)
    assert torch.equal(ours[real], reference[real])


def test_orthogonal_map_is_das(tiny):
    rotation_map = orthogonal_map(64, seed=3)
    rotation = rotation_map.rotation.detach()
    k = 5
    intervention = InvertibleIntervention.interchange(rotation_map, CoordinateMask.first(64, k))
    positions = [-2, -1]
    ours = interchange(tiny, BASE, SOURCE, [Patch(SITE, intervention, positions)])
    basis = FromSource(rotation[:k].float())
    assert torch.allclose(ours, interchange(tiny, BASE, SOURCE, [Patch(SITE, basis, positions)]), atol=1e-5)

    m = torch.zeros(64, dtype=torch.float64)
    m[:k] = 1

    def rotated_by_hand(activation, context):  # DAS: Rᵀ[(1 - m)⊙R h + m⊙R s]
        h, s = activation.double(), context.source.double()
        return (((1 - m) * (h @ rotation.T) + m * (s @ rotation.T)) @ rotation).to(activation.dtype)

    assert torch.equal(ours, interchange(tiny, BASE, SOURCE, [Patch(SITE, rotated_by_hand, positions)]))


@pytest.mark.parametrize("factory", [identity_map, orthogonal_map, iresnet_map, coupling_flow])
def test_zero_shift_reproduces_unpatched_logits(tiny, factory):
    bijection = fitted(factory(64), tiny)
    if factory is coupling_flow:
        with torch.no_grad():  # make the couplings non-trivial
            for layer in bijection.layers[1::2]:
                layer.conditioner[-1].weight.normal_(0, 0.05)
    intervention = InvertibleIntervention.shift(bijection, torch.zeros(64))
    clean = run_with_patches(tiny, BASE)
    patched = run_with_patches(tiny, BASE, [Patch(SITE, intervention)])
    assert (patched - clean).abs().max() <= 1e-4


def test_shift_on_a_subset_moves_only_those_latents(tiny):
    bijection = fitted(coupling_flow(64, hidden=16), tiny)
    delta = torch.randn(64)
    mask = CoordinateMask(64, [0, 5])
    intervention = InvertibleIntervention.shift(bijection, delta, alpha=0.5, mask=mask)
    h = torch.randn(7, 64, dtype=torch.float64)
    moved = bijection(intervention.edit(h)) - bijection(h)
    expected = torch.zeros(64, dtype=torch.float64)
    expected[[0, 5]] = 0.5 * delta[[0, 5]].double()
    assert torch.allclose(moved, expected.expand(7, -1), atol=1e-9)


def test_soft_mask_blends_and_hardens():
    mask = SoftMask(8, init=0.0)
    assert torch.allclose(mask(), torch.full((8,), 0.5))
    with torch.no_grad():
        mask.logits[[1, 4]] = 5.0
    assert mask.hard().coordinates == [1, 4]
    intervention = InvertibleIntervention.interchange(identity_map(8), mask)
    h, s = torch.zeros(2, 8), torch.ones(2, 8)
    assert torch.allclose(intervention.edit(h, s), mask().expand(2, -1))


def test_fixed_target_and_generation_with_effects(tiny):
    bijection = fitted(iresnet_map(64, hidden=32), tiny)
    acts = cache_sites(tiny, SOURCE, [SITE])
    intervention = InvertibleIntervention.interchange(bijection, CoordinateMask.first(64, 4))
    fixed = intervention.fixed_to_mean(acts[SITE][acts.positions >= 1])
    assert isinstance(fixed.target, FixedLatent) and fixed.bijection is bijection
    clean = acts[SITE]
    _, edited = run_with_patches(tiny, SOURCE, [Patch(SITE, fixed, slice(1, None))], cache=[SITE])
    rows = acts.positions >= 1
    with torch.no_grad():
        mean = bijection(clean[rows].double()).mean(0)
        z, z_clean = bijection(edited[SITE][rows].double()), bijection(clean[rows].double())
    assert torch.allclose(z[:, :4], mean[:4].expand(len(z), -1), atol=1e-4)  # the masked latents sit at the mean
    assert torch.allclose(z[:, 4:], z_clean[:, 4:], atol=1e-4)  # the others are left where they were
    assert torch.equal(edited[SITE][acts.positions == 0], clean[acts.positions == 0])
    assert not torch.allclose(edited[SITE][rows], clean[rows], atol=1e-3)
    log = EffectLog()
    patch = Patch(SITE, fixed, slice(1, None))
    out = generate_with_patches(tiny, BASE, [patch], max_new_tokens=4, stop_at_eos=False, record=log)
    assert all(len(tokens) == 4 for tokens in out.tokens)
    summary = log.summary()
    assert 0 < summary["locations_changed"] < summary["locations"]  # position 0 is never edited
    assert summary["mean_delta_norm"] > 0
    assert fixed.inverse_residual is not None and fixed.inverse_residual <= 1e-12


def test_slice_positions_select_every_token_but_the_first(tiny):
    seen = {}

    def record(activation, context):
        seen["mask"], seen["positions"] = context.mask.clone(), context.positions.clone()
        return activation

    run_with_patches(tiny, BASE, [Patch(SITE, record, slice(1, None))])
    assert torch.equal(seen["mask"], seen["positions"] >= 1)
    with pytest.raises(ValueError, match="not a valid range"):
        Patch(SITE, record, slice(3, 1))


def test_interchange_target_without_source_is_explained(tiny):
    intervention = InvertibleIntervention.interchange(identity_map(64))
    with pytest.raises(ValueError, match="interchange"):
        run_with_patches(tiny, BASE, [Patch(SITE, intervention)])
    with pytest.raises(ValueError, match="target has d=8"):
        InvertibleIntervention(identity_map(64), FixedLatent(8))
