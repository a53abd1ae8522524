"""Feature steering on the embedded SmolLM2 (random TopK SAEs of its width; no trained bank needed)."""

from __future__ import annotations

import pytest
import torch

from flowsteer.evals import perplexity
from flowsteer.patching import cache_sites, run_with_patches
from flowsteer.sites import Site
from flowsteer.steering import (
    FeatureSteerer,
    coherence,
)
from tests.flow_synthetic import topk_sae, unit

pytestmark = pytest.mark.real_model

TEXT = ["The bride and groom exchanged rings in the old church before all their friends."]


def test_rescale_zero_removes_a_feature_and_one_is_the_identity(real_model):
    site = Site(12, "resid_post")
    sae = topk_sae(unit(torch.randn(512, 576, generator=torch.Generator().manual_seed(0))), k=16, site=site)
    bank = {site: sae}
    clean = cache_sites(real_model, TEXT, [site])[site]
    feature = int((sae.encode(clean[0, 1:]) > 0).sum(0).argmax())
    assert sae.encode(clean)[0, 1:, feature].max() > 0
    same = FeatureSteerer(bank, [f"12/res/{feature}"], "rescale", 1.0).patches()
    assert torch.equal(run_with_patches(real_model, TEXT, same), run_with_patches(real_model, TEXT))
    removed = FeatureSteerer(bank, [f"12/res/{feature}"], "rescale", 0.0).patches()
    edited = run_with_patches(real_model, TEXT, removed, cache=[site])[1][site]
    assert sae.encode(edited)[0, :, feature].abs().max() < 1e-3


def test_perplexity_prefers_real_text_and_coherence_punishes_loops(real_model):
    tokenizer = real_model.tokenizer
    texts = [" went to the market and bought fresh bread for breakfast.", " bread bread bread bread bread bread bread"]
    ppl = perplexity(real_model, ["This morning I"] * 2, [tokenizer.encode(t) for t in texts])
    shuffled = " market the fresh to bought breakfast and went bread for."
    worse = perplexity(real_model, ["This morning I"], [tokenizer.encode(shuffled)])
    assert ppl[0] < worse[0]
    c = coherence(ppl, texts, reference=float(ppl[0]))
    assert c[0] == pytest.approx(1.0) and c[1] < 0.2
