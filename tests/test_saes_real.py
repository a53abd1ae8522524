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
    config = SAETrainingConfig(d_sae=512, k=16, tokens=6144, passes=1, batch_size=512, lr=4e-3, round_tokens=3072)
    bank = train_saes(real_model, ["3/res", "3/mlp", "3/att"], config, out=tmp_path / "bank", progress=False)
    loaded = SAEBank.load(tmp_path / "bank", real_model)
    assert torch.equal(loaded["3/res"].W_dec, bank["3/res"].W_dec)
    eval_chunks = token_chunks(real_model.tokenizer, "eval", config.context)[:8]
    results = evaluate_bank(real_model, loaded, eval_chunks, eval_tokens=1024, ce_tokens=254)
    for site in ("3/res", "3/mlp", "3/att"):
        assert results[site]["explained_variance"] > 0.1  # 12 steps: far from converged, far from broken (<= 0)
        assert results[site]["l0"] <= 16
    assert results["3/res"]["ce_sae"] < results["3/res"]["ce_zero_ablated"]


def test_second_attention_sink_is_left_out_of_training(real_model):
    """A chunk whose first two tokens repeat gets a second attention sink at position 1 from layer 11 on."""
    from flowsteer.saes.activations import ActivationRounds
    from flowsteer.sites import Site

    text = token_chunks(real_model.tokenizer, "eval", 64)[:4]
    one = real_model.tokenizer("1", add_special_tokens=False)["input_ids"][0]
    chunks = text.clone()
    chunks[0, :2] = one  # "1", "1", ...: position 1 becomes a sink
    sites = [Site(10), Site(12)]
    rounds = ActivationRounds(real_model, sites, chunks, round_tokens=252, max_norm_ratio=None)
    everything, order_all = rounds[0]
    sink = int((rounds.chunk_rows(0) == 0).nonzero()) * rounds.tokens_per_chunk  # position 1 of chunk 0
    norms = everything.norm(dim=-1)
    ratio = norms / norms.median(dim=1, keepdim=True).values
    assert ratio[0, sink] < 5 and ratio[1, sink] > 50  # ordinary at layer 10, a sink at layer 12
    _, order = ActivationRounds(real_model, sites, chunks, round_tokens=252)[0]
    assert sink not in order.tolist() and len(order) == len(order_all) - 1
