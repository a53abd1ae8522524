"""`RescaleFeatures` (h + (r-1)·a·v, error term kept) and `run_from_layer` on the tiny model."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from flowsteer.patching import AddVector, Patch, cache_sites, encode, run_with_patches
from flowsteer.patching.features import RescaleFeatures, decoder_directions
from flowsteer.patching.run import run_from_layer
from flowsteer.sites import Site
from tests.flow_synthetic import persistent_bank

PROMPTS = ["The cat sat on the mat.", "Rivers run to the sea and back again."]


def orthonormal_jumprelu(d: int = 64, n: int = 32, seed: int = 0) -> JumpReLUSAE:
    """Orthonormal decoder rows, encoder = decoder transpose: removing a·v zeroes exactly that feature."""
    gen = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=n))
    with torch.no_grad():
        sae.W_dec.copy_(basis.T[:n])
        sae.W_enc.copy_(basis[:, :n])
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.randn(d, generator=gen) * 0.1)
        sae.threshold.fill_(0.05)
    return sae.eval()


def error_term(sae, h):
    return h - sae.decode(sae.encode(h))


def test_rescaling_removes_the_feature_and_keeps_the_error_term(tiny):
    sae, site = orthonormal_jumprelu(), Site(1, "resid_post")
    clean = cache_sites(tiny, PROMPTS, [site])[site]
    acts = sae.encode(clean)
    feature = int(acts[:, -1].sum(0).argmax())
    assert (acts[:, -1, feature] > 0).all()
    for r, expected in ((0.0, torch.zeros(2)), (2.0, 2 * acts[:, -1, feature])):
        patch = Patch(site, RescaleFeatures(sae, [feature], r), positions=[-1])
        _, edited = run_with_patches(tiny, PROMPTS, [patch], cache=[site])
        h = edited[site]
        assert torch.allclose(sae.encode(h)[:, -1, feature], expected, atol=1e-5)
        others = [i for i in range(32) if i != feature]
        assert torch.allclose(sae.encode(h)[:, -1, others], acts[:, -1, others], atol=1e-5)
        assert torch.allclose(error_term(sae, h), error_term(sae, clean), atol=1e-5)  # what the SAE misses survives
        assert torch.equal(h[:, :-1], clean[:, :-1])  # other positions untouched
        expected_h = clean[:, -1] + (r - 1) * acts[:, -1, feature, None] * sae.W_dec[feature]
        assert torch.allclose(h[:, -1], expected_h, atol=1e-5)


def test_factor_one_is_the_identity_and_rows_take_their_own_factors(tiny):
    sae = persistent_bank()[Site(2, "resid_post")]
    site = Site(2, "resid_post")
    clean = run_with_patches(tiny, PROMPTS)
    assert torch.equal(run_with_patches(tiny, PROMPTS, [Patch(site, RescaleFeatures(sae, [0, 5, 9], 1.0))]), clean)
    both = [PROMPTS[0], PROMPTS[0]]
    acts = sae.encode(cache_sites(tiny, both, [site])[site])
    features = acts[0, -1].nonzero().flatten()[:2].tolist()
    factor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    logits = run_with_patches(tiny, both, [Patch(site, RescaleFeatures(sae, features, factor), [-1])])
    assert torch.equal(logits[1], run_with_patches(tiny, both)[1])
    assert not torch.allclose(logits[0, -1], logits[1, -1])
    with pytest.raises(ValueError, match="factor has 2 rows but the batch has 1"):
        run_with_patches(tiny, PROMPTS[0], [Patch(site, RescaleFeatures(sae, features, factor))])
    with pytest.raises(ValueError, match="factor has shape"):
        RescaleFeatures(sae, features, torch.ones(3))


def test_decoder_directions_follow_norm_rescaling_topk_saes():
    sae = persistent_bank()[Site(0, "mlp_out")]
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    assert torch.allclose(decoder_directions(sae), sae.W_dec)
    sae.cfg.rescale_acts_by_decoder_norm = True
    assert torch.allclose(decoder_directions(sae, torch.tensor([4, 1])), sae.W_dec[[4, 1]] / 3.0, atol=1e-6)


def test_run_from_layer_continues_a_forward_pass_exactly(tiny):
    batch = encode(tiny, PROMPTS)
    start = cache_sites(tiny, batch, [Site(2, "resid_pre")])[Site(2, "resid_pre")]
    assert torch.allclose(run_from_layer(tiny, batch, start, 2), run_with_patches(tiny, batch), atol=1e-6)
    vector = torch.randn(64)
    full = run_with_patches(tiny, batch, [Patch("1/res", AddVector(vector), [-1])])
    resumed = run_from_layer(tiny, batch, start, 2, [Patch("2/pre", AddVector(vector), [-1])])
    assert torch.allclose(full, resumed, atol=1e-5)
    out, acts = run_from_layer(tiny, batch, start, 2, cache=["2/res"], stop_at_layer=3)
    assert torch.allclose(out, acts["2/res"]) and torch.allclose(
        out, cache_sites(tiny, batch, ["2/res"])["2/res"], atol=1e-6
    )
    with pytest.raises(ValueError, match="patch 2/pre instead of 1/res"):
        run_from_layer(tiny, batch, start, 2, [Patch("1/res", AddVector(vector))])
