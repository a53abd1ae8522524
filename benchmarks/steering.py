"""Steered generation throughput: unsteered vs one feature vs a 40-feature flow graph.

Greedy, 48 new tokens (EOS ignored), raw prompts, batch 1 and 20 (the analyses' batch). Configurations:
unsteered; one residual feature added (``add``: one fused `AddVector` patch); 40 features of a flow
graph added (cumulative, one fused patch per site); the same 40 features rescaled (``rescale``:
each site's SAE encodes every token, as deactivation does). After an untimed 4-token warm-up each, they
run ``--repeats`` times, interleaved (`protocol.interleave`); tokens/s from the min (best) and median
times. Also times the demo's `compare_steering` call (graph, n=2, 32 tokens), ``--repeats`` times.
Prints a table and writes JSON (``benchmarks/results/steering.json``).

    python benchmarks/steering.py [--repeats 3] [--saes DIR] [--out FILE]
    python benchmarks/steering.py --batches 1 --new-tokens 4 --repeats 1 --out /tmp/s.json   # smoke run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from protocol import Result, add_arguments, interleave, save, stamp

from flowsteer import load_model
from flowsteer.flow.build import build_flow_graph
from flowsteer.patching import generate_with_patches
from flowsteer.paths import cache_dir
from flowsteer.saes import SAEBank
from flowsteer.sites import Site
from flowsteer.steering import FeatureSteerer, compare_steering, typical_activations

PROMPTS = ["I think", "The weather today", "My favourite book", "In the morning", "The best way to"] * 4
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
    parser.add_argument("--batches", default="1,20", help="batch sizes, comma-separated (at most 20)")
    parser.add_argument("--new-tokens", type=int, default=48)
    add_arguments(parser, Path(__file__).parent / "results" / "steering.json")
    args = parser.parse_args()
    new_tokens = args.new_tokens
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    started = stamp(str(next(model.parameters()).dtype), ["transformer-lens", "sae-lens"])
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
    trials = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        prompts = PROMPTS[:batch]

        def generate(patches, prompts=prompts, tokens=new_tokens):
            return lambda: Result(output=generate_with_patches(model, prompts, patches, max_new_tokens=tokens,
                                                               stop_at_eos=False))

        warmup = {name: generate(patches, prompts[:1], 4) for name, patches in configs.items()}
        trials[f"batch_{batch}"] = t = interleave({name: generate(p) for name, p in configs.items()}, args.repeats,
                                                  warmup=warmup)
        rates = {name: batch * new_tokens / t.min(name) for name in configs}
        results[f"batch_{batch}"] = {
            "tokens_per_second": rates,
            "tokens_per_second_median": {name: batch * new_tokens / t.median(name) for name in configs},
            "relative_to_unsteered": {name: rate / rates["unsteered"] for name, rate in rates.items()},
        }
    graph = build_flow_graph(bank, args.seeds[0])
    trials["demo_compare_steering"] = t = interleave(
        {"compare_steering": lambda: compare_steering(model, bank, graph, "I think", n=2, max_new_tokens=32)},
        args.repeats)
    demo = {
        "call": "compare_steering(model, bank, build_flow_graph(bank, seed), 'I think', n=2, max_new_tokens=32)",
        "cpu_seconds": t.min("compare_steering", "cpu_seconds"),
        "wall_seconds": t.min("compare_steering"),
        "wall_seconds_median": t.median("compare_steering"),
        "steerer": repr(t.outputs["compare_steering"].steerer),
    }
    record = {
        "demo_compare_steering": demo,
        "new_tokens": new_tokens,
        "features": len(features),
        "sites": len({f.site for f in features}),
        "graph_seeds": args.seeds,
        "targets": {"one_feature_add": 0.95, "graph_40_add": 0.85},
        "results": results,
    }
    print(f"{'config':18s} " + " ".join(f"{'batch ' + b.split('_')[1]:>22s}" for b in results))
    for name in configs:
        cells = [
            f"{r['tokens_per_second'][name]:8.1f} tok/s {r['relative_to_unsteered'][name]:5.2f}x"
            for r in results.values()
        ]
        print(f"{name:18s} " + " ".join(f"{c:>22s}" for c in cells))
    print(f"compare_steering (demo call, best of {args.repeats}): {demo['cpu_seconds']:.1f} s CPU, "
          f"{demo['wall_seconds']:.1f} s wall")
    save(args.out, record, trials, started)
    print(args.out)


if __name__ == "__main__":
    main()
