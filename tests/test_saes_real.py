"""SAEs on the embedded model: the corpus size, and a few-thousand-token multi-site training smoke run."""

from __future__ import annotations

import pytest
import torch

from flowsteer.data import corpus_tokens, token_chunks
from flowsteer.saes import SAEBank, SAETrainingConfig, evaluate_bank, train_saes

pytestmark = pytest.mark.real_model


def test_corpus_has_two_million_training_tokens(real_model):
    corpus = corpus_tokens(real_model.tokenizer)
    assert corpus.train.numel() >= 2_000_000 and corpus.eval.numel() > 20_000
    assert set(corpus.stats["splits"]["train"]["tokens_by_source"]) == {"bible", "fortunes", "pydoc"}


def test_multi_site_training_smoke_run(real_model, tmp_path):
    config = SAETrainingConfig(d_sae=512, k=16, tokens=6144, batch_size=512, lr=4e-3, round_tokens=3072)
    bank = train_saes(real_model, ["3/res", "3/mlp", "3/att"], config, out=tmp_path / "bank", progress=False)
    loaded = SAEBank.load(tmp_path / "bank", real_model)
    assert torch.equal(loaded["3/res"].W_dec, bank["3/res"].W_dec)
    eval_chunks = token_chunks(real_model.tokenizer, "eval", config.context)[:8]
    results = evaluate_bank(real_model, loaded, eval_chunks, eval_tokens=1024, ce_tokens=254)
    for site in ("3/res", "3/mlp", "3/att"):
        assert results[site]["explained_variance"] > 0.1  # 12 steps: far from converged, far from broken (<= 0)
        assert results[site]["l0"] <= 16
    assert results["3/res"]["ce_sae"] < results["3/res"]["ce_zero_ablated"]
