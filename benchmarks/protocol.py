"""The benchmark protocol every script in ``benchmarks/`` follows: contenders interleaved and repeated,
summarised by min and median next to the raw values, and stamped with what ran where.

    trials = interleave({"a": run_a, "b": run_b}, repeats=args.repeats)
    save(args.out, {"results": ...}, trials, started)   # started = stamp(...) taken before timing

`interleave` calls a, b, a, b, a, b (after an optional untimed warm-up round in the same order), so slow
drift of a shared machine hits every contender alike. For each call it records the wall time
(``seconds``), the CPU time of this process's threads (``cpu_seconds``: less sensitive to other load, but
it counts spin-waiting threads too) and any numbers the call returns in a `Result`; a contender that
times itself (a subprocess, or a run whose setup should not count) returns its own ``seconds`` (and
``cpu_seconds``), which replace the measured ones. `Trials.summary` gives, per contender and number,
``min``, ``median`` and the per-repeat ``values``.

`stamp` records the git commit (and whether the tree had changes outside ``benchmarks/results/``), the
date, python, torch, CPU model, thread count, torch's CPU capability, the GPU if any, the compute dtype,
``FLOWSTEER_DTYPE``, the OpenMP settings (``OMP_WAIT_POLICY``...) and the load average, so a number can
always be traced to the run that made it.
This is a script helper, not package code: scripts import it as ``from protocol import ...``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flowsteer.paths import write_json

MIN_REPEATS = 3
REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Result:
    """What a contender may return: numbers to record for this repeat (``seconds`` replaces the measured
    wall time) and an output to keep (only the last repeat's; never saved)."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    output: Any = None


@dataclass
class Trials:
    """The record of one `interleave` run."""

    repeats: int
    calls: list[str] = field(default_factory=list)  # the timed calls in the order they ran
    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # name -> number -> per repeat
    outputs: dict[str, Any] = field(default_factory=dict)
    warmup: bool = False

    def stats(self, name: str, metric: str = "seconds") -> dict[str, Any]:
        values = self.values[name][metric]
        return {"min": min(values), "median": statistics.median(values), "values": values}

    def min(self, name: str, metric: str = "seconds") -> float:
        return min(self.values[name][metric])

    def median(self, name: str, metric: str = "seconds") -> float:
        return statistics.median(self.values[name][metric])

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {name: {metric: self.stats(name, metric) for metric in metrics} for name, metrics in self.values.items()}

    def protocol(self) -> dict[str, Any]:
        return {"order": "interleaved", "repeats": self.repeats, "warmup_round": self.warmup,
                "meets_protocol": self.repeats >= MIN_REPEATS, "calls": self.calls}


def interleave(
    contenders: Mapping[str, Callable[[], Any]],
    repeats: int = MIN_REPEATS,
    *,
    warmup: bool | Mapping[str, Callable[[], Any]] = False,
    clock: Callable[[], float] = time.perf_counter,
    on_call: Callable[[int, str, dict[str, float]], None] | None = None,
) -> Trials:
    """Run ``contenders`` round-robin ``repeats`` times and record every call.

    Args:
        contenders: name -> a call without arguments returning None, a `Result`, or any output to keep.
        warmup: True: one untimed call of each contender first (same order); a mapping: those
            calls instead (e.g. the same work at a smaller size).
        on_call: called after every timed call with (repeat, name, its numbers), e.g. to print progress.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not contenders:
        raise ValueError("interleave needs at least one contender")
    if repeats < MIN_REPEATS:
        warnings.warn(f"{repeats} repeat(s): fewer than the protocol's {MIN_REPEATS}; fine for a smoke run only",
                      stacklevel=2)
    if warmup:
        calls = contenders if warmup is True else warmup
        for name in contenders:
            if name in calls:
                calls[name]()
    trials = Trials(repeats=repeats, warmup=bool(warmup), values={name: {} for name in contenders})
    for repeat in range(repeats):
        for name, call in contenders.items():
            start, cpu_start = clock(), time.process_time()
            returned = call()
            seconds, cpu_seconds = clock() - start, time.process_time() - cpu_start
            numbers = {"seconds": seconds, "cpu_seconds": cpu_seconds}
            if isinstance(returned, Result):
                numbers.update({key: float(value) for key, value in returned.metrics.items()})
                trials.outputs[name] = returned.output
            elif returned is not None:
                trials.outputs[name] = returned
            for key, value in numbers.items():
                trials.values[name].setdefault(key, []).append(value)
            trials.calls.append(name)
            if on_call is not None:
                on_call(repeat, name, numbers)
    lengths = {name: {len(v) for v in metrics.values()} for name, metrics in trials.values.items()}
    uneven = {name: sizes for name, sizes in lengths.items() if sizes != {repeats}}
    if uneven:
        raise ValueError(f"contenders returned different numbers on different repeats: {uneven}")
    return trials


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def stamp(compute_dtype: str | None, packages: Iterable[str] = ()) -> dict[str, Any]:
    """What ran where: take it before timing and pass it to `save`."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=all")
    changed = None if status is None else [
        line[3:] for line in status.splitlines() if not line[3:].startswith("benchmarks/results/")
    ]
    return {
        "git_commit": commit.strip() if commit else None,
        "git_dirty": None if changed is None else bool(changed),
        "git_changed_paths": None if changed is None else changed[:20],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "compute_dtype": compute_dtype,
        "FLOWSTEER_DTYPE": os.environ.get("FLOWSTEER_DTYPE"),
        # OpenMP threads spin while they wait unless told otherwise: on a shared machine that decides timings
        "env": {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "KMP_BLOCKTIME")},
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in packages},
        "load_average_start": list(os.getloadavg()),
    }


def save(path: str | os.PathLike, payload: dict[str, Any], trials: Trials | Mapping[str, Trials],
         started: dict[str, Any]) -> None:
    """Write ``payload`` with the stamp, the protocol and every timing (min, median, raw values), atomically.

    ``trials`` is one `Trials` or several by name (e.g. one per batch size).
    """
    record = dict(payload)
    record["stamp"] = {**started, "load_average_end": list(os.getloadavg())}
    if isinstance(trials, Trials):
        record["protocol"], record["timings"] = trials.protocol(), trials.summary()
    else:
        record["protocol"] = {key: t.protocol() for key, t in trials.items()}
        record["timings"] = {key: t.summary() for key, t in trials.items()}
    write_json(path, record)


def add_arguments(parser: argparse.ArgumentParser, out: str | os.PathLike) -> None:
    """The flags every benchmark takes: ``--repeats`` and ``--out``."""
    help = f"interleaved repeats of every contender (default {MIN_REPEATS}; fewer for smoke runs only)"
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=help)
    parser.add_argument("--out", default=str(out), help=f"JSON to write (default {out})")


def table(trials: Trials, metric: str = "seconds", unit: str = "s") -> str:
    """A Markdown table of ``metric``'s min, median and raw values per contender."""
    lines = [f"| contender | min {unit} | median {unit} | values |", "|---|---|---|---|"]
    for name in trials.values:
        s = trials.stats(name, metric)
        values = ", ".join(f"{v:.3g}" for v in s["values"])
        lines.append(f"| {name} | {s['min']:.3g} | {s['median']:.3g} | {values} |")
    return "\n".join(lines)
