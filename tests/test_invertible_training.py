"""Training maps through the frozen tiny model, INNSteer, and saving/loading with validation."""

from __future__ import annotations

import json

import pytest
import torch

from flowsteer import tiny_model
from flowsteer.invertible import (
    CoordinateMask,
    HingeTerm,
    InterchangeObjective,
    InvertibleIntervention,
    TrainConfig,
    collect_activations,
    coupling_flow,
    fit_innsteer,
    fit_nonlinear,
    for_generation,
    hinge_thresholds,
    innsteer_intervention,
    iresnet_map,
    load_intervention,
    load_map,
    save_intervention,
    save_map,
    train_innsteer,
    train_intervention,
)
from flowsteer.patching import Patch, generate_with_patches, interchange, run_with_patches

BASE = [f"Tell me how to do task {i} now." for i in range(16)]
SOURCE = [f"Please describe idea {i} for me!" for i in range(16)]
SITE = "1/res"
POSITIONS = [-3, -2, -1]
FAST = TrainConfig(steps=8, batch_size=8, lr=1e-2, eval_every=4, patience=3, progress=False)


def test_interchange_training_with_hinge_and_magnitude_reduces_the_loss(tiny):
    torch.manual_seed(0)
    directions = {"2/res": torch.randn(64), "3/res": torch.randn(64)}
    thresholds = hinge_thresholds(tiny, SOURCE, directions, POSITIONS)
    hinge = HingeTerm(directions, {site: t - 1.0 for site, t in thresholds.items()}, margin=0.5, weight=0.1)
    objective = InterchangeObjective(hinge=hinge, magnitude_weight=0.01)
    intervention = InvertibleIntervention.interchange(iresnet_map(64, hidden=32), CoordinateMask.first(64, 8))
    patch = Patch(SITE, intervention, POSITIONS)
    history = train_intervention(tiny, patch, BASE, SOURCE, objective=objective, config=FAST)
    assert history.best_val < history.initial_val
    assert {"output", "hinge", "magnitude"} <= set(history.train[0])
    assert history.train[0]["hinge"] > 0  # the shifted thresholds make the hinge active
    block = intervention.bijection.layers[1]
    assert block.lipschitz_bound() <= 0.9 * (1 + 1e-6)
    assert not hasattr(intervention, "last_edits")  # no state kept between calls


def test_shift_training_on_a_metric_moves_the_metric(tiny):
    token = 65  # any fixed token: push its log-probability after the prompt up

    def metric(logits):
        return -logits[:, -1].log_softmax(-1)[:, token]

    intervention = InvertibleIntervention.shift(coupling_flow(64, hidden=16), mask=CoordinateMask.first(64, 16))
    patch = Patch(SITE, intervention, [-1])
    before = metric(run_with_patches(tiny, BASE)).mean()
    history = train_intervention(tiny, patch, BASE, objective=InterchangeObjective(output=metric), config=FAST)
    with torch.no_grad():
        after = metric(run_with_patches(tiny, BASE, [patch])).mean()
    assert after < before and history.best_val < history.initial_val
    assert intervention.target.delta.requires_grad and intervention.target.delta.abs().sum() > 0


def test_one_call_recipes_give_patches_for_generation(tiny):
    config = TrainConfig(steps=2, eval_every=1, progress=False)
    patch, history = fit_nonlinear(
        tiny, SITE, BASE, SOURCE, positions=POSITIONS, map="coupling", map_kwargs={"hidden": 16}, config=config
    )
    assert len(history.train) == 2 and patch.intervention.mask.coordinates == list(range(16))
    usable = for_generation(tiny, patch, SOURCE, positions=slice(1, None))
    assert usable.positions != patch.positions and usable.intervention.bijection is patch.intervention.bijection
    steer, result = fit_innsteer(tiny, SITE, SOURCE, BASE, map_kwargs={"hidden": 16, "n_blocks": 1}, config=config)
    assert steer.positions == usable.positions and result.delta.shape == (64,)
    out = generate_with_patches(tiny, BASE[:2], [usable, steer], max_new_tokens=3)  # no source run needed
    assert len(out.texts) == 2


def test_innsteer_separates_and_steers(tiny):
    pos = collect_activations(tiny, [f"Good great lovely day {i}" for i in range(12)], SITE)
    neg = collect_activations(tiny, [f"Bad awful sad night {i}!" for i in range(12)], SITE)
    flow = coupling_flow(64, hidden=32, n_blocks=2)
    config = TrainConfig(steps=30, batch_size=64, lr=3e-3, eval_every=10, progress=False)
    result = train_innsteer(flow, pos, neg, config=config)
    assert result.history.best_val < result.history.initial_val
    assert result.val_accuracy >= 0.9
    intervention = innsteer_intervention(flow, result.delta, alpha=1.0)
    with torch.no_grad():
        z_neg, z_pos = flow(neg.double()), flow(pos.double())
        moved = intervention.edit(neg.double())
        assert torch.allclose(flow(moved) - z_neg, result.delta.double().expand_as(z_neg), atol=1e-8)
        # the translation carries the negative class's latent mean (close to) onto the positive one
        gap_before = (z_neg.mean(0) - z_pos.mean(0)).norm()
        gap_after = (flow(moved).mean(0) - z_pos.mean(0)).norm()
    assert gap_after < 0.2 * gap_before


def test_save_and_load_round_trip_and_validation(tiny, tmp_path):
    flow = coupling_flow(64, hidden=16)
    patch = Patch(SITE, InvertibleIntervention.interchange(flow, CoordinateMask.first(64, 8)), slice(1, None))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.01 * torch.randn_like(p))
    folder = save_intervention(tmp_path / "nl", patch, tiny, note="test")
    loaded = load_intervention(folder, tiny)
    assert loaded.site == patch.site and loaded.positions == patch.positions
    assert torch.equal(
        interchange(tiny, BASE, SOURCE, [patch]), interchange(tiny, BASE, SOURCE, [loaded])
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["d_model"] == 64 and config["metadata"] == {"note": "test"}

    other = tiny_model(d_model=32, n_layers=2)
    with pytest.raises(ValueError, match="d_model=64.*d_model=32"):
        load_intervention(folder, other)
    with pytest.raises(ValueError, match="expected a flowsteer.invertible map"):
        load_map(folder, tiny)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_intervention(tmp_path / "missing", tiny)
    map_folder = save_map(tmp_path / "map", flow, "3/res", tiny)
    shallow = tiny_model(n_layers=2)
    with pytest.raises(ValueError, match="valid layers are 0..1"):
        load_map(map_folder, shallow)
    bijection, site = load_map(map_folder, tiny)
    assert str(site) == "3/res"
    assert torch.equal(bijection.layers[1].conditioner[0].weight, flow.layers[1].conditioner[0].weight)
    config["bijection"]["layers"][1]["hidden"] = 17
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape"):
        load_intervention(folder, tiny)
    with pytest.raises(TypeError, match="InvertibleIntervention"):
        save_intervention(tmp_path / "x", Patch(SITE, lambda a, c: a), tiny)
