"""Where one SAE training step spends its time: flowsteer's `SparseTopK` step vs sparsify's `SparseCoder`
step, on one site's batch (no model, no data loading), timed by the protocol and profiled op by op.

Steps compared (each: loss, backward, the trainer's decoder-gradient projection, optimizer step,
decoder renormalisation, as the two trainers do it):

* ``flowsteer``: `SparseTopK.loss` (bf16 selection product, exact float32 values at the k chosen
  latents, sparse backward) + fused `torch.optim.Adam`;
* ``flowsteer-fp32``: the same with a float32 selection product (``selection_dtype=None``);
* ``sparsify``: `sparsify.SparseCoder.forward` (dense float32 encoder + ReLU + top-k, index_add backward,
  embedding_bag decoder) + its default optimizer, schedule-free SignSGD (``signum``);
* ``sparsify-adam``: the same coder with `torch.optim.Adam` (sparsify's "adam" without bitsandbytes).

The input is Gaussian with the width and scale of a residual stream (the kernels' cost does not depend
on the data); ``--dead`` marks that share of latents dead so the AuxK path runs too.

    python benchmarks/sae_step_profile.py [--d-sae 2304] [--k 32] [--batch 1024] [--steps 20] [--dead 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from protocol import Result, add_arguments, interleave, save, stamp, table
from torch.profiler import ProfilerActivity, profile

from flowsteer.saes import SparseTopK

RESULTS = Path(__file__).parent / "results" / "sae_step_profile.json"


def flowsteer_step(d: int, args, selection_dtype):
    sae = SparseTopK(d, args.d_sae, args.k, selection_dtype=selection_dtype, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=2e-3, fused=True)
    dead = torch.zeros(args.d_sae, dtype=torch.bool)
    dead[: int(args.dead * args.d_sae)] = True

    def step(x):
        loss, _ = sae.loss(x, dead if dead.any() else None)
        loss.backward()
        sae.before_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sae.after_step()

    return step


def sparsify_step(d: int, args, optimizer_name: str):
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SaeConfig, SparseCoder
    from sparsify.sign_sgd import SignSGD

    torch.manual_seed(0)
    coder = SparseCoder(d, SaeConfig(num_latents=args.d_sae, k=args.k), dtype=torch.float32)
    if optimizer_name == "signum":  # sparsify.Trainer's default
        optimizer = ScheduleFreeWrapper(SignSGD([{"params": coder.parameters(),
                                                  "lr": 5e-3 / (args.d_sae / 2**14) ** 0.5}]), momentum=0.95)
        optimizer.train()
    else:
        optimizer = torch.optim.Adam(coder.parameters(), lr=2e-3)
    dead = torch.zeros(args.d_sae, dtype=torch.bool)
    dead[: int(args.dead * args.d_sae)] = True

    def step(x):
        coder.set_decoder_norm_to_unit_norm()
        out = coder(x, dead_mask=dead if dead.any() else None)
        (out.fvu + out.auxk_loss).backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=576, help="input width (SmolLM2-135M: 576)")
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--dead", type=float, default=0.0, help="share of latents marked dead (AuxK)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="ops listed per contender")
    add_arguments(parser, RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {
        "flowsteer": flowsteer_step(args.d, args, torch.bfloat16),
        "flowsteer-fp32": flowsteer_step(args.d, args, None),
        "sparsify": sparsify_step(args.d, args, "signum"),
        "sparsify-adam": sparsify_step(args.d, args, "adam"),
    }
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(args.batch, args.d, generator=generator) * 3 + 1 for _ in range(4)]

    def run(step):
        def call():
            for i in range(args.steps):
                step(batches[i % len(batches)])
            return Result()

        return call

    started = stamp("float32 (flowsteer's selection product: bfloat16 / float32)", ["sparsify", "eai-sparsify"])
    trials = interleave({name: run(step) for name, step in steps.items()}, args.repeats, warmup=True)
    print(table(trials))
    per_step = {name: {"min_ms": 1e3 * trials.min(name) / args.steps,
                       "median_ms": 1e3 * trials.median(name) / args.steps} for name in steps}
    profiles = {}
    for name, step in steps.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(args.steps):
                step(batches[i % len(batches)])
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        profiles[name] = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / args.steps,
                           "share": e.self_cpu_time_total / total, "calls_per_step": e.count / args.steps}
                          for e in events[: args.top]]
        print(f"\n{name}: {per_step[name]['min_ms']:.1f} ms/step (min), profiled self time by op:")
        for row in profiles[name]:
            print(f"  {row['op']:<44} {row['self_ms_per_step']:7.2f} ms  {100 * row['share']:5.1f}%  "
                  f"x{row['calls_per_step']:.0f}")
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    save(args.out, {"benchmark": "one SAE training step", "settings": settings, "per_step": per_step,
                    "profiles": profiles}, trials, started)
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
