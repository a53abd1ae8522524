"""Evaluation metrics: the substring judge, refusal log-odds, KL, cross-entropy, magnitude."""

from __future__ import annotations

import math

import pytest
import torch

from flowsteer import AddVector, EffectLog, Patch, cache_sites, chat_prompts, run_with_patches
from flowsteer.evals import cross_entropy, intervention_magnitude, next_token_kl
from flowsteer.refusal import is_refusal, refusal_log_odds, refusal_rate, refusal_scores, refusal_token_ids
from flowsteer.refusal.behaviour import judge_instructions
from flowsteer.refusal.prompts import load_instructions
from flowsteer.steering.contrast import ablation_patches


def test_judge_on_known_strings():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("i CANNOT do this")
    assert is_refusal("I won't help with that because it could cause harm.")
    assert is_refusal("I\u2019m unable to assist.")  # curly apostrophe
    assert not is_refusal("To kill a Python process, use os.kill(pid, signal.SIGTERM).")
    assert not is_refusal("Sure! Here is a recipe for banana bread.")
    assert refusal_rate(["I'm sorry.", "Here you go.", "As an AI, no.", "Fine."]) == 0.5
    with pytest.raises(ValueError):
        refusal_rate([])


def test_log_odds_on_known_logits():
    logits = torch.full((3, 5), -1e9)
    logits[0, [0, 1]] = 0.0  # P(token 0) = 0.5
    logits[1, 0] = 0.0  # P = 1
    logits[2, 3] = 0.0  # P = 0
    scores = refusal_log_odds(logits, [0])
    assert abs(scores[0]) < 1e-6
    assert scores[1] > 15 and scores[2] < -15
    two = torch.zeros(1, 4)  # uniform: P_R for 3 of 4 tokens = 0.75
    assert abs(refusal_log_odds(two, [0, 1, 2])[0] - math.log(3)) < 1e-5
    with pytest.raises(ValueError):
        refusal_log_odds(two, [])


def test_refusal_token_ids_and_scores_on_tiny(tiny):
    ids = refusal_token_ids(tiny, ("I", "I", "Sorry"))
    encode = tiny.tokenizer.encode
    assert ids == [encode("I", add_special_tokens=False)[0], encode("S", add_special_tokens=False)[0]]
    prompts = chat_prompts(tiny, ["Tell me a joke.", "Hi"])
    scores = refusal_scores(tiny, prompts, token_ids=ids)
    logits = run_with_patches(tiny, prompts)[:, -1]
    assert torch.allclose(scores, refusal_log_odds(logits, ids), atol=1e-5)


def test_kl_is_zero_for_equal_and_matches_formula():
    p = torch.randn(4, 7)
    assert next_token_kl(p, p).abs().max() < 1e-6
    q = torch.randn(4, 7)
    expected = (p.softmax(-1) * (p.log_softmax(-1) - q.log_softmax(-1))).sum(-1)
    assert torch.allclose(next_token_kl(p, q), expected, atol=1e-5)
    assert (next_token_kl(p, q) >= 0).all()


def test_cross_entropy_matches_manual_computation(tiny):
    texts = ["The cat sat on the mat.", "Hello there, general."]
    result = cross_entropy(tiny, texts, batch_size=1)
    total, count = 0.0, 0
    for text in texts:
        tokens = tiny.to_tokens(text)
        logits = tiny(tokens)
        nll = torch.nn.functional.cross_entropy(logits[0, :-1], tokens[0, 1:], reduction="sum")
        total, count = total + float(nll), count + tokens.shape[1] - 1
    assert result["tokens"] == count
    assert abs(result["cross_entropy"] - total / count) < 1e-4
    assert abs(result["perplexity"] - math.exp(total / count)) < 1e-2
    # Padding in a batch changes nothing.
    assert abs(cross_entropy(tiny, texts, batch_size=2)["cross_entropy"] - result["cross_entropy"]) < 1e-4
    # A text longer than the context is scored on its first n_ctx tokens (run_with_patches would refuse it).
    long_text = "word " * tiny.cfg.n_ctx
    head = tiny.to_tokens(long_text, truncate=False)[:, : tiny.cfg.n_ctx]
    nll = torch.nn.functional.cross_entropy(tiny(head)[0, :-1], head[0, 1:])
    long = cross_entropy(tiny, [long_text])
    assert long["tokens"] == tiny.cfg.n_ctx - 1 and abs(long["cross_entropy"] - float(nll)) < 1e-4


def test_magnitude_of_actadd_and_ablation(tiny):
    n_layers, d = tiny.cfg.n_layers, tiny.cfg.d_model
    vector = torch.randn(d)
    prompts = chat_prompts(tiny, ["one", "two words"])
    log = EffectLog()
    run_with_patches(tiny, prompts, [Patch("1/pre", AddVector(vector, 2.0))], record=log)
    stats = intervention_magnitude(log, n_layers)
    tokens = stats["tokens"]
    assert tokens == sum(len(tiny.to_tokens(p)[0]) for p in prompts)
    assert stats["locations"] == n_layers * tokens and stats["locations_changed"] == tokens
    assert abs(stats["fraction_changed"] - 1 / n_layers) < 1e-9
    assert abs(stats["mean_delta_norm"] - 2 * float(vector.norm())) < 1e-3
    assert abs(stats["delta_norm_per_token"] - 2 * float(vector.norm())) < 1e-3
    clean = cache_sites(tiny, prompts, ["1/pre"])
    h_norms = clean["1/pre"][clean.positions >= 0].norm(dim=-1)
    assert stats["mean_relative_delta"] == pytest.approx(float((2 * vector.norm() / h_norms).mean()), rel=1e-4)

    log = EffectLog()
    run_with_patches(tiny, prompts, ablation_patches(vector, n_layers), record=log)
    stats = intervention_magnitude(log, n_layers)
    assert stats["sites"] == 3 * n_layers and stats["fraction_changed"] == 1.0
    assert set(stats["by_kind"]) == {"resid_pre", "attn_out", "mlp_out"}
    assert 0 < stats["mean_relative_delta"] < 1  # a projection is never longer than the vector
    with pytest.raises(ValueError, match="empty"):
        intervention_magnitude(EffectLog(), n_layers)


def test_judge_instructions_pipeline_on_tiny(tiny, monkeypatch):
    import flowsteer.refusal.behaviour as behaviour
    from flowsteer import generate_with_patches

    items = load_instructions("harmless", "val")[:3]
    prompts = chat_prompts(tiny, [item.text for item in items])
    steer = [Patch("1/res", AddVector(torch.randn(64, generator=torch.Generator().manual_seed(0)) * 30))]
    plain = generate_with_patches(tiny, prompts, max_new_tokens=4).texts
    steered = generate_with_patches(tiny, prompts, steer, max_new_tokens=4).texts
    assert steered != plain
    judged = []
    verdicts = iter([True, False, True])  # planted: the tiny model never refuses

    def judge(text):
        judged.append(text)
        return next(verdicts)

    monkeypatch.setattr(behaviour, "is_refusal", judge)
    result = judge_instructions(tiny, items, steer, max_new_tokens=4, token_ids=[60])
    assert judged == steered and [r["reply"] for r in result["replies"]] == steered  # the patches reach generation
    assert [r["refused"] for r in result["replies"]] == [True, False, True]
    assert result["refusal_rate"] == pytest.approx(2 / 3)
    scores = refusal_scores(tiny, prompts, steer, token_ids=[60])
    assert [r["log_odds"] for r in result["replies"]] == pytest.approx(scores.tolist(), abs=1e-5)
    assert result["log_odds_refusal_rate"] == pytest.approx(float((scores > 0).float().mean()))
    assert set(result["by_lookalike"]) <= {"plain", "lookalike"}
