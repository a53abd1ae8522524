"""Which dtype bulk compute runs in, chosen from the hardware rather than hard-coded.

flowsteer's heavy loops (SAE activation harvests, TopK selection, the organism fine-tune) can run their
matmuls in bfloat16 while keeping float32 master weights. That is several times faster where bfloat16 is
native (CUDA GPUs that support it; CPUs with AVX512-BF16 or AMX-BF16) and about 40x *slower* where it is
emulated (AVX2 laptops, older servers, many cloud VMs). So every such setting takes a precision spec:

- ``"auto"`` (the default): bfloat16 where it is native on the device, float32 otherwise;
- ``"float32"``, ``"bfloat16"``, ``"float16"`` or a ``torch.dtype``: used as given.

The environment variable ``FLOWSTEER_DTYPE`` (same values) replaces ``"auto"`` everywhere, e.g.
``FLOWSTEER_DTYPE=float32 make demo`` to run as on a CPU without native bf16; explicit values still win.
On a CPU whose capability flags are inconclusive (not x86), a one-time matmul benchmark decides, cached per
machine under ``cache_dir("precision")``. Each choice is logged once; `PrecisionChoice.to_dict` is what
manifests and metrics files record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from functools import cache

import torch

from flowsteer.paths import cache_dir, write_json

log = logging.getLogger(__name__)

ENV_VAR = "FLOWSTEER_DTYPE"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECS = ("auto", *DTYPES)
Precision = str | torch.dtype


class PrecisionError(ValueError):
    """A precision spec that is not one of `SPECS` or a floating ``torch.dtype``."""


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision: the dtype, the device it is for, who decided and why."""

    dtype: torch.dtype
    device: str
    source: str  # "explicit", "environment" or "auto"
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def to_dict(self) -> dict[str, str]:
        return {"dtype": self.name, "device": self.device, "source": self.source, "reason": self.reason}


def _parse(spec: Precision, origin: str) -> torch.dtype | None:
    """``spec`` as a dtype (None for "auto"); `PrecisionError` naming ``origin`` when invalid."""
    if isinstance(spec, torch.dtype):
        if not spec.is_floating_point:
            raise PrecisionError(f"{origin} must be a floating dtype, got {spec}")
        return spec
    name = str(spec).strip().lower().removeprefix("torch.")
    if name == "auto":
        return None
    if name not in DTYPES:
        raise PrecisionError(f"{origin} is {spec!r}; use one of {', '.join(SPECS)}")
    return DTYPES[name]


def check_precision(spec: Precision, origin: str = "precision") -> None:
    """Raise `PrecisionError` now if ``spec`` is not a valid precision (for config validation)."""
    _parse(spec, origin)


def resolve_precision(spec: Precision = "auto", device: torch.device | str | None = None) -> PrecisionChoice:
    """Resolve ``spec`` for ``device`` (default: CUDA when present, else CPU); see the module docstring."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    explicit = _parse(spec, "precision")
    if explicit is not None:
        return _logged(PrecisionChoice(explicit, device.type, "explicit", "asked for"))
    env = os.environ.get(ENV_VAR, "").strip()
    if env and env.lower() != "auto":
        dtype = _parse(env, f"the environment variable {ENV_VAR}")
        return _logged(PrecisionChoice(dtype, device.type, "environment", f"{ENV_VAR}={env}"))
    native, why = native_bf16(device)
    dtype = torch.bfloat16 if native else torch.float32
    return _logged(PrecisionChoice(dtype, device.type, "auto", why))


def compute_dtype(spec: Precision = "auto", device: torch.device | str | None = None) -> torch.dtype:
    """The dtype `resolve_precision` picks."""
    return resolve_precision(spec, device).dtype


def dtype_name(spec: Precision = "auto", device: torch.device | str | None = None) -> str:
    """The name ("float32", "bfloat16", ...) of the dtype `resolve_precision` picks."""
    return resolve_precision(spec, device).name


def autocast(spec: Precision = "auto", device: torch.device | str | None = None) -> torch.autocast:
    """``torch.autocast`` in the resolved dtype on ``device``; disabled when that is float32."""
    choice = resolve_precision(spec, device)
    device_type = torch.device(choice.device).type
    return torch.autocast(device_type, dtype=choice.dtype, enabled=choice.dtype != torch.float32)


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether bfloat16 matmuls are native (fast) on ``device``, and why we think so."""
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device)
        return supported, f"{name} {'supports' if supported else 'lacks'} native bfloat16"
    if device.type != "cpu":
        return False, f"no native-bfloat16 check for {device.type} devices; float32 is the safe choice"
    flags = cpu_bf16_flags()
    if flags is not None:
        present = [name for name, has in flags.items() if has]
        if present:
            return True, f"CPU has {', '.join(present)}"
        return False, f"CPU lacks {' and '.join(flags)} (bfloat16 would be emulated, far slower than float32)"
    faster, ratio = benchmarked_bf16()
    return faster, f"CPU flags inconclusive; measured bfloat16 matmul at {ratio:.2f}x float32's time"


def cpu_bf16_flags() -> dict[str, bool] | None:
    """The CPU's bfloat16 instruction flags (x86: AVX512-BF16, AMX-BF16), or None where they say nothing
    conclusive (other architectures, or torch builds without ``torch.cpu.get_capabilities``)."""
    try:
        capabilities = torch.cpu.get_capabilities()
    except (AttributeError, RuntimeError):
        return None
    if capabilities.get("architecture") != "x86_64":
        return None
    return {"AVX512-BF16": bool(capabilities.get("avx512_bf16")), "AMX-BF16": bool(capabilities.get("amx_bf16"))}


@cache
def benchmarked_bf16(rows: int = 512, inner: int = 576, cols: int = 1536) -> tuple[bool, float]:
    """Time a ``rows x inner @ inner x cols`` matmul in bfloat16 and float32 on the CPU (best of 5, once
    per machine: cached on disk); return (bfloat16 is faster, bfloat16 time / float32 time)."""
    key = json.dumps([platform.machine(), platform.processor(), _cpu_model(), torch.__version__,
                      torch.get_num_threads(), rows, inner, cols])
    path = cache_dir("precision") / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        ratio = json.loads(path.read_text())["ratio"]
    else:
        a, b = torch.randn(rows, inner), torch.randn(inner, cols)
        ratio = _best_time(a.bfloat16(), b.bfloat16()) / _best_time(a, b)
        write_json(path, {"key": key, "ratio": ratio})
    return ratio < 1.0, ratio


def _best_time(a: torch.Tensor, b: torch.Tensor, repeats: int = 5) -> float:
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return min(times)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        return ""


_LOGGED: set[tuple[str, str, str]] = set()


def _logged(choice: PrecisionChoice) -> PrecisionChoice:
    key = (choice.device, choice.name, choice.reason)
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("compute precision on %s: %s (%s: %s)", choice.device, choice.name, choice.source, choice.reason)
    return choice
