"""Feature-flow machinery on the embedded SmolLM2 with random SAEs of its width (d = 576)."""

from __future__ import annotations

import pytest
import torch

from flowsteer.flow.deactivation import deactivation_records
from flowsteer.flow.labels import FeatureLabels
from flowsteer.flow.scores import layer_scores
from flowsteer.sites import Site
from tests.flow_synthetic import topk_sae, unit

pytestmark = pytest.mark.real_model

TEXTS = ["The capital of France is Paris, a city on the Seine.", "def add(a, b):\n    return a + b"]


@pytest.fixture(scope="module")
def bank(real_model):
    gen = torch.Generator().manual_seed(0)
    sites = [Site(5, "resid_post"), Site(6, "attn_out"), Site(6, "mlp_out"), Site(6, "resid_post")]
    return {site: topk_sae(unit(torch.randn(256, 576, generator=gen)), k=16, site=site) for site in sites}


def test_rerunning_one_block_from_the_cache_reproduces_the_clean_activations(real_model, bank):
    scores = {Site(6, "resid_post"): layer_scores(bank, "6/res", k=5)}
    records = deactivation_records(
        real_model, bank, scores, TEXTS, strategies=("top1", "top5"), r=1.0, tokens_per_text=2, max_targets=4
    )
    edited = [rec for rec in records if rec.edited]
    assert edited
    for rec in edited:
        assert rec.z_new == pytest.approx(rec.z_old, rel=1e-3, abs=1e-3)


def test_promoted_tokens_go_through_the_final_norm_and_unembedding(real_model, bank):
    site = Site(6, "resid_post")
    token = int(real_model.W_U.norm(dim=0).argmax())  # the longest unembedding column: its own top logit
    with torch.no_grad():
        bank[site].W_dec[3] = real_model.W_U[:, token] / real_model.ln_final.w
    labels = FeatureLabels.compute(real_model, bank, TEXTS, sites=[site], n_contexts=2)
    assert labels.sites[site].promoted[3, 0] == token
    assert labels.promoted_tokens("6/res/3")[0] == real_model.tokenizer.decode([token])
