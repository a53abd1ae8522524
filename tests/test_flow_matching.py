"""Feature matching: chunked top-k cosine, permutation matching, folding."""

from __future__ import annotations

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from flowsteer.flow.folding import activation_scales, feature_scales, fold, matching_vectors
from flowsteer.flow.matching import compose, permutation_match, topk_cosine
from tests.flow_synthetic import jumprelu_sae, topk_sae, unit


def full_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T


@pytest.mark.parametrize("k", [1, 4])
def test_chunked_topk_equals_the_full_matrix_result(k):
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 32, generator=gen) * 3, torch.randn(500, 32, generator=gen) * 0.2
    full = full_cosine(a, b)
    values, indices = full.topk(k, dim=1)
    # 4 KiB blocks: two rows of 500 float32 at a time, 150 blocks
    chunked = topk_cosine(a, b, k, chunk_bytes=4096)
    assert torch.equal(chunked.indices, indices)
    assert torch.allclose(chunked.scores, values, atol=1e-6)
    rows = torch.tensor([299, 3, 150])
    subset = topk_cosine(a, b, k, rows=rows, chunk_bytes=4096)
    assert torch.equal(subset.indices, indices[rows])


def test_encoder_and_both_weights_average_the_cosines():
    first, second = jumprelu_sae(seed=3), jumprelu_sae(seed=4)
    dec = full_cosine(first.W_dec.detach(), second.W_dec.detach())
    enc = full_cosine(first.W_enc.detach().T, second.W_enc.detach().T)
    assert torch.equal(topk_cosine(first, second, weights="encoder", chunk_bytes=2048).top1, enc.argmax(1))
    both = topk_cosine(first, second, 2, weights="both", chunk_bytes=2048)
    assert torch.allclose(both.scores, ((dec + enc) / 2).topk(2, dim=1).values, atol=1e-6)


def test_matching_refuses_different_widths_and_bad_k():
    with pytest.raises(ValueError, match="dimension 8 with features of dimension 9"):
        topk_cosine(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match="k=5 must lie in 1..4"):
        topk_cosine(torch.randn(4, 8), torch.randn(4, 8), 5)


def test_permutation_matching_recovers_a_planted_permutation():
    sae = jumprelu_sae(n=96, seed=5)
    perm = torch.randperm(96, generator=torch.Generator().manual_seed(6))
    other = jumprelu_sae(n=96, seed=7)
    with torch.no_grad():  # `other` holds sae's features in the order perm, slightly perturbed
        other.W_dec.copy_(sae.W_dec[perm] + 0.01 * torch.randn(96, 64))
        other.W_enc.copy_(sae.W_enc[:, perm])
        other.threshold.copy_(sae.threshold[perm])
    inverse = torch.argsort(perm)
    for weights in ("decoder", "both"):
        matches = permutation_match(sae, other, weights=weights)
        assert torch.equal(matches.top1, inverse), weights
        assert (matches.top1_scores > 0.99).all()


def test_folding_keeps_jumprelu_outputs_and_moves_thresholds_into_the_weights():
    sae = jumprelu_sae(seed=8)
    folded = fold(sae)
    x = torch.randn(50, 64) * 2
    assert torch.allclose(folded(x), sae(x), atol=1e-5)
    assert torch.allclose(folded.encode(x) * sae.threshold, sae.encode(x), atol=1e-5)
    assert torch.allclose(folded.threshold, torch.ones(96))
    assert torch.allclose(folded.W_dec, sae.W_dec * sae.threshold[:, None])
    assert torch.allclose(matching_vectors(sae, "decoder"), folded.W_dec)


def test_folding_a_relu_sae_needs_scales_and_a_topk_sae_refuses():
    sae = StandardSAE(StandardSAEConfig(d_in=16, d_sae=32))
    with torch.no_grad():
        sae.b_enc.normal_()
    scales = torch.rand(32) + 0.5
    x = torch.randn(20, 16)
    assert torch.allclose(fold(sae, scales)(x), sae(x), atol=1e-5)
    with pytest.raises(ValueError, match="pass scales"):
        fold(sae)
    with pytest.raises(ValueError, match="changes which k features win"):
        fold(topk_sae(unit(torch.randn(32, 16))))


def test_activation_scales_are_mean_nonzero_activations_with_dead_features_at_the_median():
    sae = topk_sae(torch.eye(8, 8), k=2)  # activation of feature i = x_i when among the two largest
    x = torch.tensor([[3.0, 1.0, 0, 0, 0, 0, 0, 0], [5.0, 0, 2.0, 0, 0, 0, 0, 0]])
    scales = activation_scales(sae, [x])
    assert scales[:3].tolist() == [4.0, 1.0, 2.0]
    assert (scales[3:] == 2.0).all()  # never active: the median of 4, 1, 2
    assert feature_scales(sae) is None and torch.equal(feature_scales(sae, scales), scales)


def test_compose_chains_top1_matches_and_keeps_the_weakest_link():
    first, second, third = torch.eye(3), torch.eye(3)[[2, 0, 1]], torch.eye(3)[[1, 2, 0]] * 2
    a, b = topk_cosine(first, second), topk_cosine(second, third)
    chained = compose(a, b)
    assert torch.equal(chained.top1, topk_cosine(first, third).top1)
    assert torch.equal(chained.top1_scores, torch.minimum(a.top1_scores, b.top1_scores[a.top1]))
