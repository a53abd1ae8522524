"""Continuation perplexity: one implementation, checked against the full forward pass."""

import math

import torch

from flowsteer.evals import continuation_nll, continuation_perplexity, perplexity
from flowsteer.patching import run_with_patches
from flowsteer.patching.inputs import tokenize


def direct_nll(model, prompt: str, continuation: list[int]) -> float:
    ids = torch.cat([tokenize(model, [prompt])[0], torch.tensor(continuation)])[None]
    logprobs = run_with_patches(model, ids).double().log_softmax(-1)[0]
    n = len(continuation)
    return -float(logprobs[-n - 1 : -1].gather(-1, ids[0, -n:, None]).sum())


def test_nll_matches_an_unpadded_forward_pass_under_left_padding(tiny):
    prompts = ["a", "a much longer prompt here", "mid prompt"]
    continuations = [[5, 6, 7, 8], [9], []]
    nll, counts = continuation_nll(tiny, prompts, continuations, batch_size=3)
    assert counts.tolist() == [4, 1, 0]
    for i in (0, 1):
        assert math.isclose(float(nll[i]), direct_nll(tiny, prompts[i], continuations[i]), rel_tol=1e-4)
    assert float(nll[2]) == 0.0


def test_per_sequence_and_pooled_perplexity_agree(tiny):
    prompts = ["one", "two words", "three"]
    continuations = [[10, 11], [12, 13, 14], []]
    per_sequence = perplexity(tiny, prompts, continuations, batch_size=2)
    assert torch.isinf(per_sequence[2])
    pooled = continuation_perplexity(tiny, prompts, continuations, batch_size=2)
    nll, counts = continuation_nll(tiny, prompts, continuations)
    assert pooled["tokens"] == 5
    assert math.isclose(pooled["perplexity"], math.exp(float(nll.sum()) / 5), rel_tol=1e-6)
    assert math.isclose(pooled["median_perplexity"], float(per_sequence[:2].median()), rel_tol=1e-6)
    empty = continuation_perplexity(tiny, ["x"], [[]])
    assert empty["tokens"] == 0 and math.isnan(empty["perplexity"])
