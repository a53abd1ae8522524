"""Precision chosen by the hardware: every "auto" default resolves to float32 without native bfloat16 and to
bfloat16 with it; FLOWSTEER_DTYPE and explicit values win in that order."""

from __future__ import annotations

import pytest
import torch

from flowsteer.models import precision
from flowsteer.models.precision import PrecisionError, compute_dtype, resolve_precision
from flowsteer.refusal.organism.recipe import DEFAULT_RECIPE, OrganismRecipe
from flowsteer.saes import SAETrainingConfig, train_saes
from flowsteer.saes.default import DEFAULT_CONFIG


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU like an AVX2 laptop: no bfloat16 instructions."""
    monkeypatch.delenv("FLOWSTEER_DTYPE", raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: {"AVX512-BF16": False, "AMX-BF16": False})


@pytest.fixture
def native_bf16(monkeypatch):
    """A CPU with AVX512-BF16 / AMX."""
    monkeypatch.delenv("FLOWSTEER_DTYPE", raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: {"AVX512-BF16": True, "AMX-BF16": True})


def every_default() -> dict[str, str]:
    """Every precision setting flowsteer ships as a default (add new ones here)."""
    return {
        "SAETrainingConfig.selection_dtype": SAETrainingConfig().selection_dtype,
        "SAETrainingConfig.harvest_dtype": SAETrainingConfig().harvest_dtype,
        "DEFAULT_CONFIG.selection_dtype": DEFAULT_CONFIG.selection_dtype,
        "DEFAULT_CONFIG.harvest_dtype": DEFAULT_CONFIG.harvest_dtype,
        "OrganismRecipe.compute_dtype": DEFAULT_RECIPE.compute_dtype,
    }


def test_every_default_is_float32_without_native_bf16(no_native_bf16):
    resolved = {name: compute_dtype(spec, "cpu") for name, spec in every_default().items()}
    assert resolved == dict.fromkeys(resolved, torch.float32)
    assert DEFAULT_CONFIG.resolved("cpu").harvest_dtype == "float32"
    assert DEFAULT_CONFIG.resolved("cpu").selection_dtype == "float32"


def test_every_default_is_bfloat16_with_native_bf16(native_bf16):
    resolved = {name: compute_dtype(spec, "cpu") for name, spec in every_default().items()}
    assert resolved == dict.fromkeys(resolved, torch.bfloat16)
    assert DEFAULT_CONFIG.resolved("cpu").harvest_dtype == "bfloat16"


def test_environment_overrides_auto_and_explicit_values_override_it(native_bf16, monkeypatch):
    monkeypatch.setenv("FLOWSTEER_DTYPE", "float32")
    choice = resolve_precision("auto", "cpu")
    assert choice.dtype == torch.float32 and choice.source == "environment"
    assert choice.to_dict() == {"dtype": "float32", "device": "cpu", "source": "environment",
                                "reason": "FLOWSTEER_DTYPE=float32"}
    assert compute_dtype("bfloat16", "cpu") == torch.bfloat16
    assert compute_dtype(torch.float16, "cpu") == torch.float16
    monkeypatch.setenv("FLOWSTEER_DTYPE", "auto")
    assert compute_dtype("auto", "cpu") == torch.bfloat16


def test_bad_specs_name_where_they_came_from(monkeypatch):
    monkeypatch.setenv("FLOWSTEER_DTYPE", "fp8")
    with pytest.raises(PrecisionError, match="FLOWSTEER_DTYPE is 'fp8'; use one of auto, float32, bfloat16"):
        resolve_precision("auto", "cpu")
    with pytest.raises(PrecisionError, match="SAETrainingConfig.harvest_dtype is 'float8'"):
        SAETrainingConfig(harvest_dtype="float8")
    with pytest.raises(PrecisionError, match="OrganismRecipe.compute_dtype"):
        OrganismRecipe(compute_dtype="int8")
    with pytest.raises(PrecisionError, match="floating"):
        resolve_precision(torch.int8, "cpu")


def test_inconclusive_flags_fall_back_to_a_cached_benchmark(monkeypatch, tmp_path):
    monkeypatch.delenv("FLOWSTEER_DTYPE", raising=False)
    monkeypatch.setenv("FLOWSTEER_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: None)
    timings = iter([3.0, 1.0])  # bfloat16 best time, then float32's: 3x slower
    calls = []

    def fake_best_time(a, b, repeats=5):
        calls.append(a.dtype)
        return next(timings)

    monkeypatch.setattr(precision, "_best_time", fake_best_time)
    benchmark = precision.benchmarked_bf16.__wrapped__  # bypass the in-process cache
    monkeypatch.setattr(precision, "benchmarked_bf16", lambda: benchmark(8, 8, 8))
    choice = resolve_precision("auto", "cpu")
    assert choice.dtype == torch.float32 and "3.00x" in choice.reason
    assert calls == [torch.bfloat16, torch.float32]
    assert resolve_precision("auto", "cpu").dtype == torch.float32 and len(calls) == 2  # read from the disk cache
    assert len(list((tmp_path / "precision").glob("*.json"))) == 1


def test_cuda_without_native_bf16_gets_float32(monkeypatch):
    monkeypatch.delenv("FLOWSTEER_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    choice = resolve_precision("auto", "cuda")
    assert choice.dtype == torch.float32 and "Tesla T4 lacks" in choice.reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert compute_dtype("auto", "cuda") == torch.bfloat16


def test_training_records_the_resolved_precision(tiny, no_native_bf16):
    chunks = torch.randint(3, 259, (40, 24), generator=torch.Generator().manual_seed(0))
    config = SAETrainingConfig(d_sae=32, k=4, tokens=512, passes=1, batch_size=256, round_tokens=512, lm_batch=8)
    bank = train_saes(tiny, ["1/res"], config, chunks=chunks, progress=False)
    training = bank.info["training"]
    assert (training["harvest_dtype"], training["selection_dtype"]) == ("float32", "float32")
    assert bank.info["precision"]["harvest"] == {"dtype": "float32", "device": "cpu", "source": "auto",
                                                 "reason": "CPU lacks AVX512-BF16 and AMX-BF16 (bfloat16 would be "
                                                           "emulated, far slower than float32)"}
