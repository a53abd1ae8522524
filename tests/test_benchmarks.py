"""The benchmark protocol (benchmarks/protocol.py) and the SAE-training benchmark's machinery, on trivial
contenders and the tiny model. Nothing here asserts a timing."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import protocol  # noqa: E402
from protocol import Result, Trials, interleave  # noqa: E402


class FakeClock:
    """A clock that advances only when a contender says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_contenders_run_interleaved_and_are_summarised_by_min_and_median():
    clock, log = FakeClock(), []
    durations = {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 4.0, 9.0]), "c": iter([1.0, 1.0, 1.0])}

    def contender(name):
        def call():
            log.append(name)
            clock.now += next(durations[name])
            return f"output of {name} #{log.count(name)}"

        return call

    trials = interleave({name: contender(name) for name in "abc"}, repeats=3, clock=clock)
    assert log == list("abcabcabc") and trials.calls == log
    assert trials.stats("a") == {"min": 1.0, "median": 2.0, "values": [3.0, 1.0, 2.0]}
    assert trials.stats("b") == {"min": 4.0, "median": 5.0, "values": [5.0, 4.0, 9.0]}
    assert trials.min("c") == trials.median("c") == 1.0
    assert trials.outputs == {name: f"output of {name} #3" for name in "abc"}  # the last repeat's
    summary = trials.summary()
    assert set(summary) == set("abc") and set(summary["a"]) == {"seconds", "cpu_seconds"}
    assert trials.protocol() == {"order": "interleaved", "repeats": 3, "warmup_round": False,
                                 "meets_protocol": True, "calls": log}


def test_results_add_numbers_and_may_replace_the_measured_time():
    log = []
    numbers = iter([7.0, 6.0, 8.0])

    def self_timed():
        log.append("self")
        return Result({"seconds": next(numbers), "peak_mb": 1.5}, "kept")

    trials = interleave({"self": self_timed, "plain": lambda: log.append("plain")}, repeats=3,
                        warmup={"self": lambda: log.append("warm")})
    assert log == ["warm"] + ["self", "plain"] * 3  # the warm-up is not timed or recorded
    assert trials.stats("self", "seconds") == {"min": 6.0, "median": 7.0, "values": [7.0, 6.0, 8.0]}
    assert trials.values["self"]["peak_mb"] == [1.5] * 3
    assert trials.outputs == {"self": "kept"} and trials.warmup


def test_bad_protocol_use_is_refused():
    with pytest.raises(ValueError, match="repeats"):
        interleave({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="contender"):
        interleave({}, repeats=3)
    flaky = iter([Result({"extra": 1.0}), None, None])
    with pytest.raises(ValueError, match="different numbers"):
        interleave({"a": lambda: next(flaky)}, repeats=3)
    with pytest.warns(UserWarning, match="smoke"):
        trials = interleave({"a": lambda: None}, repeats=1)
    assert not trials.protocol()["meets_protocol"]


def test_stamp_records_where_and_how_a_number_was_made(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWSTEER_DTYPE", "bfloat16")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    started = protocol.stamp("bfloat16", ["torch", "no-such-package-xyz"])
    assert re.fullmatch(r"[0-9a-f]{40}", started["git_commit"])
    assert isinstance(started["git_dirty"], bool)
    assert not any(p.startswith("benchmarks/results/") for p in started["git_changed_paths"])
    assert started["torch"] == torch.__version__ and started["threads"] == torch.get_num_threads()
    assert started["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert started["cpu"] and started["python"] and started["date"].endswith("+00:00")
    assert started["gpu"] is None or isinstance(started["gpu"], str)
    assert started["compute_dtype"] == "bfloat16" and started["FLOWSTEER_DTYPE"] == "bfloat16"
    assert started["env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert started["packages"] == {"torch": torch.__version__, "no-such-package-xyz": None}

    trials = Trials(repeats=3, calls=["a", "a", "a"], values={"a": {"seconds": [3.0, 1.0, 2.0]}})
    out = tmp_path / "result.json"
    protocol.save(out, {"results": {"x": 1}}, {"batch_1": trials}, started)
    saved = json.loads(out.read_text())
    assert saved["results"] == {"x": 1}
    assert saved["stamp"]["git_commit"] == started["git_commit"] and "load_average_end" in saved["stamp"]
    assert saved["timings"]["batch_1"]["a"]["seconds"] == {"min": 1.0, "median": 2.0, "values": [3.0, 1.0, 2.0]}
    assert saved["protocol"]["batch_1"]["calls"] == ["a", "a", "a"]


def test_a_benchmark_script_runs_at_a_tiny_size(tmp_path):
    out = tmp_path / "matching.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "matching.py"), "--features", "64", "--d", "16",
                           "--repeats", "2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert saved["protocol"]["calls"] == ["bare_matmul", "topk_cosine", "naive_argmax"] * 2
    assert saved["same_matches_as_naive"] is True
    assert saved["stamp"]["torch"] == torch.__version__
    for method in ("bare_matmul", "topk_cosine", "naive_argmax"):
        stats = saved["timings"][method]["seconds"]
        assert len(stats["values"]) == 2 and stats["min"] == min(stats["values"])


# --- the SAE-training benchmark's machinery (benchmarks/sae_trainers.py, sae_quality.py) ----------


@pytest.fixture(scope="module")
def sae_setup(tiny):
    from flowsteer.saes import SAETrainingConfig
    from flowsteer.sites import Site

    sites = sorted(Site.parse(s) for s in ("1/res", "2/mlp"))
    config = SAETrainingConfig(d_sae=32, k=4, tokens=1024, passes=2, batch_size=128, round_tokens=384, seed=3)
    chunks = torch.randint(3, 259, (96, 16), generator=torch.Generator().manual_seed(0))
    return sites, config, chunks


def test_every_trainer_sees_the_same_batches_as_flowsteer(tiny, sae_setup, monkeypatch):
    from sae_trainers import batch_stream, train_flowsteer

    from flowsteer.saes import SparseTopK

    sites, config, _ = sae_setup
    n = config.tokens
    # token i's activation is i in dimension 0 at every site: the batches flowsteer trains on give their indices
    cache = {site: torch.zeros(n, tiny.cfg.d_model).index_fill_(1, torch.tensor([1]), 1.0) for site in sites}
    for acts in cache.values():
        acts[:, 0] = torch.arange(n, dtype=torch.float32)
    seen = []
    loss = SparseTopK.loss

    def recording(self, x, dead):
        seen.append(x[:, 0] / x[:, 1])  # undo the input scale (dimension 1 holds 1.0 before scaling)
        return loss(self, x, dead)

    monkeypatch.setattr(SparseTopK, "loss", recording)
    stream = batch_stream(n, config, len(sites), tiny.cfg.d_model)
    train_flowsteer(tiny, cache, config, stream)
    per_step = torch.stack(seen[:: len(sites)]).round().long()  # one SAE per site per step, same rows
    assert stream.shape == (config.total_steps, config.batch_size)
    assert torch.equal(per_step, stream)


def test_the_contenders_train_from_the_cache_and_are_scored_alike(tiny, sae_setup):
    pytest.importorskip("sparsify")
    from sae_lens import SAE
    from sae_quality import ce_recovered, mean_over_sites, reconstruction
    from sae_trainers import TRAINERS, batch_stream, harvest

    from flowsteer.saes import SAEBank, ce_losses

    sites, config, chunks = sae_setup
    precision = torch.get_float32_matmul_precision()
    cache = harvest(tiny, sites, chunks, config.tokens, config)
    assert all(acts.shape == (config.tokens, tiny.cfg.d_model) for acts in cache.values())
    held_out = harvest(tiny, sites, chunks[-24:], 256, config, seed=1)
    stream = batch_stream(config.tokens, config, len(sites), tiny.cfg.d_model)
    trained, explained = {}, {}
    for name, train in TRAINERS.items():
        saes = train(tiny, cache, config, stream)
        assert set(saes) == set(sites) and all(isinstance(sae, SAE) for sae in saes.values())
        quality = mean_over_sites(reconstruction(saes, held_out))
        assert 0 < quality["l0"] <= config.k
        explained[name] = quality["explained_variance"]
        trained[name] = saes
    # 16 steps is only a start (sae-lens, with its lr decay to lr/10 and decoder-norm rescaling, is near 0 here)
    assert all(math.isfinite(ev) for ev in explained.values()), explained
    assert explained["flowsteer"] > 0.05 and explained["sparsify"] > 0.05, explained
    assert torch.get_float32_matmul_precision() == precision  # sparsify's fit sets it; the benchmark restores it
    again = TRAINERS["sparsify"](tiny, cache, config, stream)
    assert all(torch.equal(again[s].W_dec, trained["sparsify"][s].W_dec) for s in sites)  # deterministic

    ce = ce_recovered(tiny, {"flowsteer": trained["flowsteer"], "sparsify": trained["sparsify"]}, chunks[:6], sites,
                      batch_size=4)
    for name in ("flowsteer", "sparsify"):
        reference = ce_losses(tiny, SAEBank(trained[name]), chunks[:6], sites=sites, batch_size=4)
        assert ce[name] == reference


def test_a_sparsify_coder_converts_to_the_same_sae_lens_map():
    pytest.importorskip("sparsify")
    from sae_trainers import sparsify_to_sae_lens
    from sparsify import SaeConfig, SparseCoder

    from flowsteer.sites import Site

    torch.manual_seed(0)
    coder = SparseCoder(24, SaeConfig(num_latents=96, k=5))
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.1)
        coder.b_dec.normal_(0, 0.3)
        coder.W_dec.mul_(1.3)  # not unit norm: the conversion must not assume it
    sae = sparsify_to_sae_lens(coder, Site.parse("1/res"))
    x = torch.randn(40, 24)
    with torch.no_grad():
        torch.testing.assert_close(sae.decode(sae.encode(x)), coder(x).sae_out)


def test_generation_compares_transformers_tokens_up_to_each_first_eos():
    from generation import compare_up_to_eos

    eos = 2
    reference = [[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [4, 2, 9, 9, 9]]
    like_transformers = [[5, 6, 2, 2, 2], [5, 6, 7, 8, 9], [4, 2, 3, 3, 3]]  # differs only after row 2's EOS
    same = compare_up_to_eos(reference, like_transformers, eos)
    assert same["identical_up_to_eos"] and not same["identical_everywhere"]
    assert [row["first_difference"] for row in same["rows"]] == [None, None, 2]
    assert not same["every_difference_starts_at_eos"]  # row 2 differs at 2, one after its EOS at 1
    eos_masked = [[5, 6, 7, 3, 3], [5, 6, 7, 8, 9], [4, 8, 9, 9, 9]]  # transformers with EOS forbidden
    masked = compare_up_to_eos(reference, eos_masked, eos)
    assert not masked["identical_up_to_eos"] and masked["every_difference_starts_at_eos"]
    early = compare_up_to_eos(reference, [[5, 6, 2, 2, 2], [5, 1, 7, 8, 9], [4, 2, 9, 9, 9]], eos)
    assert not early["identical_up_to_eos"] and not early["every_difference_starts_at_eos"]
