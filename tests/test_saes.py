"""SAEs on the tiny model: bank I/O and sae-lens interop, sparse gradients, training, resume, metrics."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput

from flowsteer.saes import (
    SAEBank,
    SAEBankError,
    SAETrainingConfig,
    SparseTopK,
    evaluate_bank,
    metrics_markdown,
    reconstruction_metrics,
    train_saes,
)
from flowsteer.saes.training import _checkpoint_path
from flowsteer.sites import Site

SITES = ["1/res", "2/mlp", "3/att"]
CONFIG = SAETrainingConfig(d_sae=96, k=6, tokens=8192, passes=1, batch_size=256, round_tokens=2048, lm_batch=16,
                          lr=3e-3)


@pytest.fixture(scope="module")
def chunks():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(3, 259, (160, 24), generator=generator)


@pytest.fixture(scope="module")
def bank(tiny, chunks):
    return train_saes(tiny, SITES, CONFIG, chunks=chunks, progress=False)


def test_sparse_topk_gradients_equal_sae_lens_dense():
    torch.manual_seed(0)
    d, s, k = 16, 64, 4
    ours = SparseTopK(d, s, k, selection_dtype=None)
    with torch.no_grad():
        ours.b_enc.normal_(0, 0.1)
        ours.b_dec.normal_(0, 0.1)
    dense = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=s, k=k, rescale_acts_by_decoder_norm=False))
    dense.load_state_dict({"W_enc": ours.W_enc_t.detach().T.clone(), "b_enc": ours.b_enc.detach().clone(),
                           "W_dec": ours.W_dec.detach().clone(), "b_dec": ours.b_dec.detach().clone()})
    x = torch.randn(50, d)
    dead = torch.zeros(s, dtype=torch.bool)
    dead[::3] = True  # AuxK active
    loss, _ = ours.loss(x, dead)
    loss.backward()
    step = TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead, n_training_steps=0, is_logging_step=False)
    reference = dense.training_forward_pass(step)
    reference.loss.backward()
    assert "auxiliary_reconstruction_loss" in reference.losses
    torch.testing.assert_close(loss, reference.loss)
    torch.testing.assert_close(ours.W_enc_t.grad, dense.W_enc.grad.T)
    for name in ("b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(dense, name).grad)


def test_training_improves_and_is_deterministic(tiny, chunks, bank):
    history = bank.info["training"]["history"]
    for site in SITES:
        assert history[-1]["explained_variance"][site] > history[0]["explained_variance"][site] + 0.05
    again = train_saes(tiny, SITES, CONFIG, chunks=chunks, progress=False)
    other_seed = train_saes(tiny, SITES[:1], SAETrainingConfig(**{**CONFIG.__dict__, "seed": 1}), chunks=chunks,
                            progress=False)
    for site in SITES:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(bank[site], name), getattr(again[site], name))
    assert not torch.equal(bank["1/res"].W_dec, other_seed["1/res"].W_dec)


def test_resume_equals_uninterrupted_run(tiny, chunks, bank, tmp_path):
    out = tmp_path / "bank"

    def interrupt(finished_rounds: int) -> None:
        if finished_rounds == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_saes(tiny, SITES, CONFIG, chunks=chunks, out=out, progress=False, checkpoint_minutes=0,
                   on_round=interrupt)
    checkpoint = _checkpoint_path(out)
    assert json.loads((checkpoint / "state.json").read_text())["round"] == 2
    with pytest.raises(ValueError, match="resume"):
        train_saes(tiny, SITES, CONFIG, chunks=chunks, out=out, progress=False)
    resumed = train_saes(tiny, SITES, CONFIG, chunks=chunks, out=out, resume=True, progress=False)
    assert not checkpoint.exists()
    for site in SITES:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(bank[site], name), getattr(resumed[site], name))


def test_exported_sae_reconstructs_raw_activations(tiny, chunks, bank):
    from flowsteer.patching import cache_sites

    acts = cache_sites(tiny, chunks[:8], SITES)
    for site in SITES:
        x = acts[site][:, 1:].reshape(-1, tiny.cfg.d_model)
        metrics = reconstruction_metrics(bank[site], x)
        assert metrics["explained_variance"] > 0.3
        assert metrics["l0"] <= CONFIG.k


def test_bank_round_trip_and_sae_lens_interop(tiny, bank, tmp_path):
    path = bank.save(tmp_path / "bank")
    loaded = SAEBank.load(path, tiny)
    assert loaded.sites == [Site.parse(s) for s in SITES]
    x = torch.randn(5, tiny.cfg.d_model)
    for site in SITES:
        folder = path / Site.parse(site).hook_name
        by_sae_lens = SAE.load_from_disk(folder)  # flowsteer -> sae-lens
        assert type(by_sae_lens).__name__ == "TopKSAE"
        torch.testing.assert_close(by_sae_lens.decode(by_sae_lens.encode(x)), bank[site].decode(bank[site].encode(x)))
        assert torch.equal(loaded[site].W_dec, bank[site].W_dec)
    # sae-lens -> flowsteer: a plain folder of SAELens folders, no index
    plain = tmp_path / "plain"
    sae = StandardSAE(StandardSAEConfig(d_in=tiny.cfg.d_model, d_sae=32))
    sae.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    sae.save_model(plain / "any-name")
    from_lens = SAEBank.load(plain, tiny)
    assert from_lens.sites == [Site(2)] and torch.equal(from_lens["2/res"].W_enc, sae.W_enc)
    assert Site(2) in from_lens and "3/res" not in from_lens


def test_bank_validation_errors(tiny, tmp_path):
    wrong_width = StandardSAE(StandardSAEConfig(d_in=tiny.cfg.d_model + 1, d_sae=8))
    with pytest.raises(SAEBankError, match="d_in"):
        SAEBank({"1/res": wrong_width}).validate(tiny)
    named = StandardSAE(StandardSAEConfig(d_in=tiny.cfg.d_model, d_sae=8))
    named.cfg.metadata.hook_name = "blocks.1.hook_mlp_out"
    with pytest.raises(SAEBankError, match="1/mlp"):
        SAEBank({"1/res": named})
    deep = SAEBank({"9/res": StandardSAE(StandardSAEConfig(d_in=tiny.cfg.d_model, d_sae=8))})
    with pytest.raises(SAEBankError, match="layers"):
        deep.validate(tiny)
    with pytest.raises(FileNotFoundError):
        SAEBank.load(tmp_path / "missing")
    with pytest.raises(KeyError, match="sites present"):
        deep["1/res"]


def test_a_damaged_bank_names_the_file_and_the_fix(tiny, bank, tmp_path):
    path = bank.save(tmp_path / "bank")
    folder = path / Site.parse(SITES[0]).hook_name
    weights, cfg_path = folder / "sae_weights.safetensors", folder / "cfg.json"
    good_weights, good_cfg = weights.read_bytes(), json.loads(cfg_path.read_text())
    fix = rf"delete {re.escape(str(path))} and train the bank again \(`flowsteer train-saes --out"

    weights.write_bytes(good_weights[: len(good_weights) // 2])
    with pytest.raises(SAEBankError, match=rf"{re.escape(str(weights))} is missing, truncated or not .*{fix}"):
        SAEBank.load(path, tiny)
    weights.write_bytes(good_weights)

    cfg_path.write_text('{"d_in": ')
    with pytest.raises(SAEBankError, match=rf"cannot read {re.escape(str(cfg_path))} \(JSONDecodeError.*{fix}"):
        SAEBank.load(path)
    cfg_path.write_text(json.dumps({"architecture": "topk"}))
    with pytest.raises(SAEBankError, match=rf"{re.escape(str(cfg_path))} is not an SAE config: .* no integer d_in"):
        SAEBank.load(path)

    d, d_sae = tiny.cfg.d_model, good_cfg["d_sae"]
    cfg_path.write_text(json.dumps(good_cfg | {"d_in": d + 1}))
    with pytest.raises(SAEBankError, match=rf"holds W_dec of shape \[{d_sae}, {d}\] but {re.escape(str(cfg_path))} "
                                           rf"gives \[d_sae, d_in\] = \[{d_sae}, {d + 1}\].*{fix}"):
        SAEBank.load(path)
    cfg_path.write_text(json.dumps(good_cfg | {"architecture": "no-such-architecture"}))
    with pytest.raises(SAEBankError, match=rf"cannot build an SAE from {re.escape(str(folder))} \(KeyError.*{fix}"):
        SAEBank.load(path)
    cfg_path.write_text(json.dumps(good_cfg))
    (path / "bank.json").write_text("{")
    with pytest.raises(SAEBankError, match=rf"cannot read {re.escape(str(path / 'bank.json'))} .*{fix}"):
        SAEBank.load(path)

    other = tmp_path / "other"  # a consistent bank of another model's width
    StandardSAE(StandardSAEConfig(d_in=d + 8, d_sae=8)).save_model(other / "blocks.1.hook_resid_post")
    cfg = json.loads((other / "blocks.1.hook_resid_post" / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.1.hook_resid_post"
    (other / "blocks.1.hook_resid_post" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEBankError, match=rf"cfg.json gives d_in={d + 8} but tiny-llama's activations at "
                                           rf"blocks.1.hook_resid_post have d_model={d}: the SAE was trained on "
                                           r"another model; .*flowsteer train-saes --model tiny-llama"):
        SAEBank.load(other, tiny)
    assert SAEBank.load(other).sites == [Site(1)]


def test_pretrained_registry_fails_clearly_without_a_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SAEBankError, match="not in SAELens's pretrained registry"):
        SAEBank.from_pretrained("no-such-release")
    with pytest.raises(SAEBankError, match="hub"):
        SAEBank.from_pretrained("gpt2-small-res-jb", ["blocks.0.hook_resid_pre"])


def _identity_sae(d: int) -> StandardSAE:
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: reconstructs every input exactly."""
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    sae.load_state_dict({"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d),
                         "W_dec": torch.cat([eye, -eye], 0), "b_dec": torch.zeros(d)})
    return sae


def test_metrics_on_known_cases(tiny, chunks):
    x = torch.randn(200, 8)
    x[:, 0] = x[:, 0].abs()  # latent 8 (the -x_0 half) never fires
    perfect = reconstruction_metrics(_identity_sae(8), x)
    assert perfect["explained_variance"] == pytest.approx(1.0)
    assert perfect["mse"] == pytest.approx(0.0, abs=1e-10)
    assert perfect["l0"] == pytest.approx(8.0)
    assert perfect["dead_fraction"] == pytest.approx(1 / 16)
    mean_only = StandardSAE(StandardSAEConfig(d_in=8, d_sae=4))
    mean_only.load_state_dict({"W_enc": torch.zeros(8, 4), "b_enc": torch.zeros(4), "W_dec": torch.zeros(4, 8),
                               "b_dec": x.mean(0)})
    assert reconstruction_metrics(mean_only, x)["explained_variance"] == pytest.approx(0.0, abs=1e-6)
    bank = SAEBank({"2/res": _identity_sae(tiny.cfg.d_model)})
    results = evaluate_bank(tiny, bank, chunks[:8], eval_tokens=64, ce_tokens=64)
    metrics = results["2/res"]
    assert metrics["ce_sae"] == pytest.approx(metrics["ce_clean"], abs=1e-4)
    assert metrics["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["ce_zero_ablated"] != pytest.approx(metrics["ce_clean"], abs=1e-4)
    assert "| 2/res |" in metrics_markdown(results) and not math.isnan(metrics["ce_loss_recovered"])


def test_train_saes_command_arguments():
    from flowsteer.cli.train_saes import parse_count, parse_layers, parse_sites
    from flowsteer.sites import Site

    assert parse_layers("6-8,12", 30) == [6, 7, 8, 12] and parse_layers("all", 3) == [0, 1, 2]
    assert parse_count("300k") == 300_000 and parse_count("2M") == 2_000_000 and parse_count("4096") == 4096
    assert parse_sites("0-1/res 1/mlp,att", 4) == [Site(0), Site(1, "attn_out"), Site(1, "mlp_out"), Site(1)]
    with pytest.raises(ValueError, match="do not exist"):
        parse_layers("28-31", 30)
    with pytest.raises(ValueError, match="300 kilo"):
        parse_count("300 kilo")


def test_bfloat16_harvest_runs_the_forward_pass_under_autocast(tiny):
    from flowsteer.saes.activations import ActivationRounds

    sites = [Site.parse("1/res"), Site.parse("2/mlp")]
    chunks = torch.randint(0, tiny.cfg.d_vocab, (6, 12), generator=torch.Generator().manual_seed(0))
    exact, order = ActivationRounds(tiny, sites, chunks, round_tokens=40, lm_batch=3)[0]
    harvested, same_order = ActivationRounds(
        tiny, sites, chunks, round_tokens=40, lm_batch=3, autocast_dtype=torch.bfloat16
    )[0]
    assert harvested.dtype == torch.float32 and torch.equal(order, same_order)
    assert not torch.equal(harvested, exact)  # the matmuls really ran in bfloat16
    assert torch.allclose(harvested, exact, rtol=0.05, atol=0.05 * float(exact.abs().mean()))
    with pytest.raises(ValueError, match="harvest_dtype"):
        SAETrainingConfig(harvest_dtype="float8")


def test_sink_tokens_are_flagged_at_any_detector_site():
    from flowsteer.saes.activations import sink_detector_sites, sink_tokens

    norms = torch.ones(2, 100)
    norms[0, 7] = 21.0  # an attention sink at the first site only
    norms[1, 42] = 19.0  # below 20x the median
    assert sink_tokens(norms, 20.0).nonzero().flatten().tolist() == [7]
    assert sink_tokens(norms, 10.0).nonzero().flatten().tolist() == [7, 42]
    sites = [Site.parse(s) for s in ("3/mlp", "1/res", "2/att")]
    assert sink_detector_sites(sites) == [Site(1), Site(3)]  # residual sites of the set + after the deepest block


def test_rounds_leave_sink_tokens_out_of_the_order(tiny, chunks):
    from flowsteer.saes.activations import ActivationRounds, sink_tokens

    sites = [Site.parse("2/mlp"), Site.parse("2/res")]
    everything, full_order = ActivationRounds(tiny, sites, chunks, round_tokens=400, max_norm_ratio=None)[0]
    assert sorted(full_order.tolist()) == list(range(everything.shape[1]))
    ratio = 1.1  # low enough that the tiny model has "sinks"
    activations, order = ActivationRounds(tiny, sites, chunks, round_tokens=400, max_norm_ratio=ratio)[0]
    flagged = sink_tokens(activations[1:].norm(dim=-1), ratio)  # the residual site decides, not the MLP output
    assert 0 < int(flagged.sum()) < activations.shape[1]
    assert torch.equal(order, full_order[~flagged[full_order]])  # the same shuffle, sinks dropped
    _, mlp_only = ActivationRounds(tiny, sites[:1], chunks, round_tokens=400, max_norm_ratio=ratio)[0]
    assert torch.equal(mlp_only, order)  # without a residual site, the residual after block 2 decides


def test_evaluation_leaves_out_the_sinks_training_leaves_out(tiny, chunks):
    bank = SAEBank({"2/res": _identity_sae(tiny.cfg.d_model)})
    every = evaluate_bank(tiny, bank, chunks[:8], eval_tokens=184, ce_tokens=23, max_norm_ratio=None)["2/res"]
    without = evaluate_bank(tiny, bank, chunks[:8], eval_tokens=184, ce_tokens=23, max_norm_ratio=1.1)["2/res"]
    assert every["excluded_tokens"] == 0 and every["tokens"] == 184
    assert without["excluded_tokens"] > 0 and without["tokens"] + without["excluded_tokens"] == 184


def test_passes_reuse_each_round_with_a_fresh_shuffle(tiny, chunks, bank):
    config = SAETrainingConfig(**{**CONFIG.__dict__, "passes": 2})
    assert config.total_steps == 2 * CONFIG.total_steps
    twice = train_saes(tiny, SITES[:1], config, chunks=chunks, progress=False)
    training = twice.info["training"]
    assert training["steps"] == config.total_steps
    assert training["rounds"] == bank.info["training"]["rounds"]  # no more forward passes than one pass
    assert all(entry["excluded_tokens"] == 0 for entry in training["history"])
    assert not torch.equal(twice["1/res"].W_dec, bank["1/res"].W_dec)
    with pytest.raises(ValueError, match="passes"):
        SAETrainingConfig(passes=0)


def test_training_from_cached_activations_equals_training_from_the_model(tiny, chunks, bank):
    from flowsteer.saes.activations import ActivationRounds
    from flowsteer.saes.training import _autocast_dtype

    harvest_dtype = _autocast_dtype(CONFIG.resolved(tiny.cfg.device).harvest_dtype)  # as train_saes harvests
    rounds = ActivationRounds(tiny, sorted(map(Site.parse, SITES)), chunks, round_tokens=CONFIG.round_tokens,
                              lm_batch=CONFIG.lm_batch, seed=CONFIG.seed, autocast_dtype=harvest_dtype)
    harvested = [rounds[r] for r in range(4)]  # the 4 rounds of CONFIG's 32 steps, no sinks in the tiny model
    assert all(order.numel() == acts.shape[1] for acts, order in harvested)
    stacked = torch.cat([acts for acts, _ in harvested], dim=1)
    cache = {str(site): stacked[i] for i, site in enumerate(rounds.sites)}
    before = {site: tensor.clone() for site, tensor in cache.items()}
    config = SAETrainingConfig(**{**CONFIG.__dict__, "round_tokens": rounds.tokens_per_round})
    cached = train_saes(tiny, SITES, config, activations=cache, progress=False)
    for site in SITES:
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            assert torch.equal(getattr(bank[site], name), getattr(cached[site], name))
        assert torch.equal(cache[site], before[site])  # the caller's activations are left as they were
    assert cached.info["training"]["steps"] == CONFIG.total_steps


def test_training_from_cached_activations_checks_its_input(tiny):
    good = {site: torch.randn(512, tiny.cfg.d_model) for site in SITES}
    with pytest.raises(ValueError, match="sites"):
        train_saes(tiny, SITES, CONFIG, activations={"1/res": good["1/res"]}, progress=False)
    with pytest.raises(ValueError, match="d_model"):
        train_saes(tiny, SITES, CONFIG, activations={**good, "3/att": torch.randn(512, 3)}, progress=False)
    with pytest.raises(ValueError, match="not both"):
        train_saes(tiny, SITES, CONFIG, activations=good, chunks=torch.zeros(4, 8, dtype=torch.long), progress=False)
