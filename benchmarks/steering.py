"""Steered generation throughput: unsteered vs one feature vs a 40-feature flow graph.

Greedy, 48 new tokens (EOS ignored), raw prompts, batch 1 and 20 (the analyses' batch). Configurations:
unsteered; one residual feature added (``add``: one fused `AddVector` patch); 40 features of a flow
graph added (cumulative, one fused patch per site); the same 40 features rescaled (``rescale``:
each site's SAE encodes every token, as deactivation does). Each runs ``--repeats`` times,
interleaved; the best time counts. Also times the demo's `compare_steering` call (graph, n=2, 32 tokens).
Prints a table and writes JSON (``benchmarks/results/steering.json``).

    python benchmarks/steering.py [--repeats 3] [--saes DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from flowsteer import load_model
from flowsteer.flow.build import build_flow_graph
from flowsteer.patching import generate_with_patches
from flowsteer.paths import cache_dir, write_json
from flowsteer.saes import SAEBank
from flowsteer.sites import Site
from flowsteer.steering import FeatureSteerer, compare_steering, typical_activations

PROMPTS = ["I think", "The weather today", "My favourite book", "In the morning", "The best way to"] * 4
NEW_TOKENS = 48
N_FEATURES = 40


def forty_features(bank, seeds: list[str]) -> list:
    """40 features of the seeds' flow graphs joined (in forward order): a flow graph of 40 nodes."""
    features: set = set()
    for seed in seeds:
        features |= set(build_flow_graph(bank, seed).features())
        if len(features) >= N_FEATURES:
            break
    return sorted(features)[:N_FEATURES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", default=str(cache_dir("saes") / "smollm2-135m-instruct-flow"))
    parser.add_argument(
        "--seeds", nargs="+", default=["20/res/1575", "13/res/1718", "14/res/1706"], help="flow-graph seeds"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "steering.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    bank = SAEBank.load(args.saes, model)
    features = forty_features(bank, args.seeds)
    sites = sorted({f.site for f in features} | {Site(12)})
    units = typical_activations(model, {s: bank[s] for s in sites})  # per-site cache: shared with analyses
    configs = {
        "unsteered": [],
        "one_feature_add": FeatureSteerer(bank, ["12/res/0"], "add", 8.0, units=units).patches(),
        "graph_40_add": FeatureSteerer(bank, features, "add", 1.0, units=units).patches(),
        "graph_40_rescale": FeatureSteerer(bank, features, "rescale", -2.0).patches(),
    }
    results: dict = {}
    for batch in (1, 20):
        prompts = PROMPTS[:batch]
        best = {name: float("inf") for name in configs}
        for patches in configs.values():  # warm-up
            generate_with_patches(model, prompts[:1], patches, max_new_tokens=4, stop_at_eos=False)
        for _ in range(args.repeats):
            for name, patches in configs.items():
                start = time.perf_counter()
                generate_with_patches(model, prompts, patches, max_new_tokens=NEW_TOKENS, stop_at_eos=False)
                best[name] = min(best[name], time.perf_counter() - start)
        rates = {name: batch * NEW_TOKENS / seconds for name, seconds in best.items()}
        results[f"batch_{batch}"] = {
            "tokens_per_second": rates,
            "relative_to_unsteered": {name: rate / rates["unsteered"] for name, rate in rates.items()},
        }
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    comparison = compare_steering(model, bank, build_flow_graph(bank, args.seeds[0]), "I think", n=2, max_new_tokens=32)
    demo = {
        "call": "compare_steering(model, bank, build_flow_graph(bank, seed), 'I think', n=2, max_new_tokens=32)",
        "cpu_seconds": time.process_time() - start_cpu,
        "wall_seconds": time.perf_counter() - start_wall,
        "steerer": repr(comparison.steerer),
    }
    record = {
        "demo_compare_steering": demo,
        "new_tokens": NEW_TOKENS,
        "features": len(features),
        "sites": len({f.site for f in features}),
        "graph_seeds": args.seeds,
        "targets": {"one_feature_add": 0.95, "graph_40_add": 0.85},
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "results": results,
    }
    print(f"{'config':18s} " + " ".join(f"{'batch ' + b.split('_')[1]:>22s}" for b in results))
    for name in configs:
        cells = [
            f"{r['tokens_per_second'][name]:8.1f} tok/s {r['relative_to_unsteered'][name]:5.2f}x"
            for r in results.values()
        ]
        print(f"{name:18s} " + " ".join(f"{c:>22s}" for c in cells))
    print(f"compare_steering (demo call): {demo['cpu_seconds']:.1f} s CPU, {demo['wall_seconds']:.1f} s wall")
    write_json(args.out, record)
    print(args.out)


if __name__ == "__main__":
    main()
