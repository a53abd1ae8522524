"""Linear baselines: difference-in-means directions, ablation and ActAdd patches, selection filters."""

from __future__ import annotations

import pytest
import torch

from flowsteer import AddVector, Patch, Site, chat_prompts, run_with_patches
from flowsteer.models import post_instruction_positions
from flowsteer.refusal.selection import (
    DirectionScores,
    NoDirectionSelected,
    score_directions,
    select_direction,
    select_direction_relaxed,
)
from flowsteer.steering.contrast import DiffInMeans, ablation_patches, actadd_patches, diff_in_means, mean_resid_pre

KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")


def test_post_instruction_positions_on_tiny(tiny):
    # Byte-level ChatML: "<|im_end|>" "\n" "<|im_start|>" a s s i s t a n t "\n"
    assert post_instruction_positions(tiny) == list(range(-13, 0))


def test_mean_resid_pre_is_float64_and_respects_left_padding(tiny):
    prompts = chat_prompts(tiny, ["a", "a much longer instruction"])
    means = mean_resid_pre(tiny, prompts, [-2, -1], [0, 2], batch_size=2)
    assert means.dtype == torch.float64 and means.shape == (2, 2, tiny.cfg.d_model)
    one_by_one = sum(mean_resid_pre(tiny, [p], [-2, -1], [0, 2]) for p in prompts) / 2
    assert torch.allclose(means, one_by_one, atol=1e-5)


def test_planted_direction_is_recovered(tiny):
    """Adding v to resid_pre of layer 2 on the 'harmful' prompts plants r = v there, nothing before."""
    planted = torch.randn(tiny.cfg.d_model)
    prompts = chat_prompts(tiny, ["first prompt", "second one", "third"])
    positions = [-3, -2, -1]
    harmful = mean_resid_pre(tiny, prompts, positions, patches=[Patch("2/pre", AddVector(planted))])
    harmless = mean_resid_pre(tiny, prompts, positions)
    directions = DiffInMeans(harmful, harmless, tuple(positions), tuple(range(tiny.cfg.n_layers)))
    for position in positions:
        assert torch.allclose(directions.direction(position, 2), planted, atol=1e-4)
        assert directions.direction(position, 1).abs().max() < 1e-6
        assert directions.direction(position, 3).norm() > 0


def test_diff_in_means_save_load_roundtrip(tiny, tmp_path):
    directions = diff_in_means(
        tiny, chat_prompts(tiny, ["bad", "worse"]), chat_prompts(tiny, ["good"]), positions=[-2, -1]
    )
    assert directions.directions.shape == (2, tiny.cfg.n_layers, tiny.cfg.d_model)
    directions.save(tmp_path / "dim.safetensors")
    loaded = DiffInMeans.load(tmp_path / "dim.safetensors", d_model=tiny.cfg.d_model)
    assert loaded.positions == (-2, -1) and loaded.layers == directions.layers
    assert torch.equal(loaded.directions, directions.directions)
    with pytest.raises(ValueError, match="d_model"):
        DiffInMeans.load(tmp_path / "dim.safetensors", d_model=7)
    with pytest.raises(ValueError, match="no direction"):
        directions.direction(-3, 0)


def _projections(model, prompts, patches, unit):
    sites = [Site(layer, kind) for layer in range(model.cfg.n_layers) for kind in KINDS]
    _, cache = run_with_patches(model, prompts, patches, cache=sites)
    return {site: cache[site] @ unit for site in sites}, cache


def test_ablation_zeroes_the_projection_at_every_site(tiny):
    direction = torch.randn(tiny.cfg.d_model)
    unit = direction / direction.norm()
    prompts = chat_prompts(tiny, ["a prompt", "another, longer prompt"])
    before, _ = _projections(tiny, prompts, [], unit)
    after, cache = _projections(tiny, prompts, ablation_patches(direction, tiny.cfg.n_layers), unit)
    for site, projection in after.items():
        scale = cache[site].norm(dim=-1).max()
        assert projection.abs().max() <= 1e-5 * scale, site
    assert any(p.abs().max() > 1e-2 for p in before.values())
    assert len(ablation_patches(direction, 5)) == 15


def test_actadd_shifts_the_projection_at_its_layer_only(tiny):
    direction = torch.randn(tiny.cfg.d_model)
    unit = direction / direction.norm()
    prompts = chat_prompts(tiny, ["a prompt"])
    before, _ = _projections(tiny, prompts, [], unit)
    after, _ = _projections(tiny, prompts, actadd_patches(direction, 2, coeff=-1.5), unit)
    shift = after[Site(2, "resid_pre")] - before[Site(2, "resid_pre")]
    assert torch.allclose(shift, torch.full_like(shift, -1.5 * float(direction.norm())), atol=1e-4)
    assert torch.equal(after[Site(1, "resid_post")], before[Site(1, "resid_post")])
    assert not torch.allclose(after[Site(3, "resid_pre")], before[Site(3, "resid_pre")])


def _scores(bypass, induce, kl, layers=(0, 1, 2, 3, 4)):
    return DirectionScores((-2, -1), tuple(layers), torch.tensor(bypass), torch.tensor(induce), torch.tensor(kl))


def test_selection_filters_on_constructed_scores():
    nan = float("nan")
    bypass = [[-9.0, -8.0, -7.0, -6.0, -20.0], [nan, -5.0, -4.0, -3.0, -2.0]]
    induce = [[1.0, -0.5, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    kl = [[0.5, 0.01, 0.01, 0.01, 0.01], [0.01, 0.01, 0.01, 0.01, 0.01]]
    selection = select_direction(_scores(bypass, induce, kl), n_layers=5)
    # (-2, 4) has the lowest bypass but layer 4 >= int(0.8 * 5); (-2, 0) fails KL; (-2, 1) fails induce.
    assert (selection.position, selection.layer, selection.bypass) == (-2, 2, -7.0)
    assert selection.discarded_by["kl"].sum() == 1 and selection.discarded_by["induce"].sum() == 1
    assert selection.discarded_by["layer"].sum() == 2 and selection.discarded_by["not_finite"].sum() == 1
    assert selection.to_dict()["kept"] == 5
    looser = select_direction(_scores(bypass, induce, kl), n_layers=5, kl_threshold=1.0)
    assert (looser.position, looser.layer) == (-2, 0)


def test_relaxed_selection_loosens_only_the_kl_threshold():
    bypass = [[-9.0, -8.0, -7.0], [-6.0, -5.0, -4.0]]
    induce = [[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]
    kl = [[3.0, 0.05, 0.4], [0.8, 0.3, 5.0]]
    scores = _scores(bypass, induce, kl, layers=(0, 1, 2))
    with pytest.raises(NoDirectionSelected):
        select_direction(scores, n_layers=10)
    chosen, threshold = select_direction_relaxed(scores, n_layers=10)
    # (-2, 1) passes KL but fails induce, which is never relaxed; at KL <= 0.5 (-2, 2) and (-1, 1) survive.
    assert threshold == 0.5 and (chosen.position, chosen.layer) == (-2, 2)
    with pytest.raises(NoDirectionSelected, match="even at KL <= 0.2"):
        select_direction_relaxed(scores, n_layers=10, kl_thresholds=(0.1, 0.2))


def test_selection_raises_when_nothing_survives():
    with pytest.raises(NoDirectionSelected, match="kl: 2"):
        select_direction(_scores([[0.0]] * 2, [[1.0]] * 2, [[0.5]] * 2, layers=(0,)), n_layers=5)


def test_score_directions_grid_on_tiny(tiny):
    harmful, harmless = chat_prompts(tiny, ["bad one", "bad two"]), chat_prompts(tiny, ["good", "fine"])
    directions = diff_in_means(tiny, harmful, harmless, positions=[-2, -1])
    scores = score_directions(tiny, directions, harmful, harmless, token_ids=[60])
    assert scores.bypass.shape == (2, tiny.cfg.n_layers)
    # Layer 0 at template tokens: same embedding for both sets, so no direction and NaN scores.
    assert torch.isnan(scores.bypass[:, 0]).all()
    assert torch.isfinite(scores.kl[:, 1:]).all() and (scores.kl[:, 1:] >= 0).all()
    assert set(scores.to_dict()) == {"positions", "layers", "bypass", "induce", "kl"}
    parts = [
        score_directions(tiny, directions.subset(positions=[p], layers=[1, 2]), harmful, harmless, token_ids=[60])
        for p in (-2, -1)
    ]
    merged = DirectionScores.concat([DirectionScores.from_dict(part.to_dict()) for part in parts])
    assert merged.positions == (-2, -1) and merged.layers == (1, 2)
    assert torch.allclose(merged.bypass, scores.bypass[:, 1:3]) and torch.allclose(merged.kl, scores.kl[:, 1:3])


def test_diff_in_means_subset(tiny):
    directions = diff_in_means(tiny, chat_prompts(tiny, ["bad"]), chat_prompts(tiny, ["good"]), positions=[-3, -2, -1])
    part = directions.subset(positions=[-1, -3], layers=[2])
    assert part.positions == (-1, -3) and part.layers == (2,)
    assert torch.equal(part.direction(-3, 2), directions.direction(-3, 2))
    with pytest.raises(ValueError, match="not in these directions"):
        directions.subset(layers=[99])
