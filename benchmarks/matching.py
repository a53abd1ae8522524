"""All-feature top-1 matching between two SAEs of Gemma-Scope shape (d = 2304, F = 16384, random
weights): flowsteer's chunked `topk_cosine` against the bare matrix product of the same shapes
(``W_dec^A @ W_dec^B.T``, the limit) and the naive full-matrix argmax (normalise both, multiply,
argmax over the F x F matrix).

Each method runs in a fresh subprocess per repeat (``--repeats``, interleaved by `protocol.interleave`), after
a small warm-up product; min and median times are reported (the ratios use the min). Peak extra memory is
measured honestly for torch's CPU allocations, which tracemalloc cannot see: the process's peak resident set
(VmHWM) is reset through ``/proc/self/clear_refs`` just before the call and read after it, minus the resident
set just before (inputs already allocated). On CUDA it is torch's ``max_memory_allocated`` minus the
allocation before the call. Prints a table and writes JSON (default ``benchmarks/results/matching.json``). Run
it under the CPU lock:

    flock /tmp/flowsteer-cpu.lock python benchmarks/matching.py [--features 16384] [--d 2304]
    python benchmarks/matching.py --features 512 --d 64 --repeats 1 --out /tmp/m.json   # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from protocol import Result, add_arguments, interleave, save, stamp

METHODS = ("bare_matmul", "topk_cosine", "naive_argmax")
TARGETS = {"time_ratio_max": 1.3, "peak_extra_mb_max": 300}


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _run_one(method: str, features: int, d: int, device: str, seed: int) -> dict:
    """Build the inputs, then time and measure one call of ``method`` (in this process)."""
    from flowsteer.flow.matching import topk_cosine

    torch.set_num_threads(2) if device == "cpu" else None
    gen = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(features, d, generator=gen, device=device)
    b = torch.randn(features, d, generator=gen, device=device)
    warm = torch.randn(256, d, device=device) @ b[:256].T  # thread pools and kernels ready
    del warm

    def call():
        if method == "bare_matmul":
            return a @ b.T
        if method == "topk_cosine":
            return topk_cosine(a, b, 1).indices
        if method == "naive_argmax":
            an = a / a.norm(dim=1, keepdim=True)
            bn = b / b.norm(dim=1, keepdim=True)
            return (an @ bn.T).argmax(dim=1)
        raise ValueError(method)

    if device == "cpu":
        before = _status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set to the current one
        start, cpu_start = time.perf_counter(), time.process_time()
        out = call()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = _status_mb("VmHWM") - before
    else:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start, cpu_start = time.perf_counter(), time.process_time()
        out = call()
        torch.cuda.synchronize()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    digest = hashlib.blake2b(out.flatten().long().cpu().numpy().tobytes(), digest_size=8).hexdigest()
    checksum = digest if method != "bare_matmul" else None
    return {"method": method, "seconds": seconds, "cpu_seconds": cpu_seconds, "peak_extra_mb": peak,
            "checksum": checksum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--d", type=int, default=2304)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)  # internal: run one method, print JSON
    add_arguments(parser, Path(__file__).parent / "results" / "matching.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run_one(args.one, args.features, args.d, args.device, args.seed)))
        return

    started = stamp("float32", [])
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}

    def contender(method: str):
        def call() -> Result:
            command = [
                sys.executable,
                __file__,
                "--one",
                method,
                "--features",
                str(args.features),
                "--d",
                str(args.d),
                "--device",
                args.device,
                "--seed",
                str(args.seed),
            ]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            runs[method].append(result)
            print(f"{method:13s} {result['seconds']:7.2f} s  {result['peak_extra_mb']:8.1f} MB", flush=True)
            # the subprocess timed the call itself: its start-up and input building do not count
            return Result({key: result[key] for key in ("seconds", "cpu_seconds", "peak_extra_mb")})

        return call

    trials = interleave({m: contender(m) for m in METHODS}, args.repeats)
    best = {m: trials.min(m) for m in METHODS}
    peak = {m: max(r["peak_extra_mb"] for r in runs[m]) for m in METHODS}
    same = runs["topk_cosine"][0]["checksum"] == runs["naive_argmax"][0]["checksum"]
    ratio = best["topk_cosine"] / best["bare_matmul"]
    summary = {
        "shape": {"features": args.features, "d": args.d, "dtype": "float32"},
        "device": args.device,
        "threads_in_subprocess": 2 if args.device == "cpu" else None,
        "memory_measure": "peak RSS (VmHWM after clear_refs) minus RSS before the call"
        if args.device == "cpu"
        else "torch.cuda.max_memory_allocated minus memory_allocated before the call",
        "best_seconds": best,
        "median_seconds": {m: trials.median(m) for m in METHODS},
        "peak_extra_mb": peak,
        "topk_over_bare": ratio,
        "naive_over_bare": best["naive_argmax"] / best["bare_matmul"],
        "same_matches_as_naive": same,
        "targets": TARGETS,
        "meets_time_target": ratio <= TARGETS["time_ratio_max"],
        "meets_memory_target": peak["topk_cosine"] <= TARGETS["peak_extra_mb_max"],
        "runs": runs,
    }
    print("\n| method | best time (s) | median (s) | x bare | peak extra memory (MB) |\n|---|---|---|---|---|")
    for m in METHODS:
        print(f"| {m} | {best[m]:.2f} | {trials.median(m):.2f} | {best[m] / best['bare_matmul']:.2f} | {peak[m]:.0f} |")
    print(f"\ntop-1 matches identical to the naive argmax: {same}")
    save(args.out, summary, trials, started)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
