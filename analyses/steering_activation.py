"""Steering analyses, step 3: theme activation (Feature Flow App. B.2, Fig. 11) on the embedded model.

From the prompt "I think", add features (strength s in feature units, every token):

The seed is the residual feature with the largest flow graph among the theme's 20 best-ranked
features (steering_prepare.py; ties by d): the best-ranked features' graphs often stop after one or
two layers, and multi-layer steering needs a graph that spans layers (the paper curated its seeds
by hand). Then:

- **baseline**: the seed feature alone, s in {2, 4, 8};
- **single**: the seed's flow-graph features at layer l, s in {2, 4, 8};
- **constant / linear (s* = 1) / exponential (α = -0.05)**: cumulative, every graph feature at
  layers <= l with the schedule's strength, s in {0.25, 0.5, 1} (many near-parallel features add up);

for 2 layers at the thirds of the graph's span. 20 samples per setting, scored B x C. When the
theme's deactivation results are missing, the job runs that experiment too (one queue job per theme).

    python analyses/steering_activation.py --themes wedding   # writes results/steering/activation_<theme>.json
"""

from __future__ import annotations

import argparse
import time

from steering_common import ACTIVATION_PROMPT, RESULTS, SAMPLES, SAMPLING, prepared, run_setting, save, setup
from steering_deactivation import run_theme, spread

from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.graph import FlowGraph
from flowsteer.patching import generate_with_patches
from flowsteer.sites import FeatureId
from flowsteer.steering import (
    Constant,
    Exponential,
    FeatureSteerer,
    Linear,
    SteeringScorer,
    graph_steerer,
)

BASELINE_STRENGTHS = (2.0, 4.0, 8.0)
SINGLE_STRENGTHS = (2.0, 4.0, 8.0)
CUMULATIVE_STRENGTHS = (0.25, 0.5, 1.0)
SCHEDULES = {"constant": Constant(), "linear": Linear(1.0), "exponential": Exponential(-0.05)}
N_LAYERS = 2


def choose_seed(bank, ranked: list[dict]) -> tuple[FeatureId, FlowGraph]:
    """The residual feature with the largest flow graph among ``ranked`` (ties: the better-ranked)."""
    candidates = [FeatureId.parse(r["feature"]) for r in ranked if "/res/" in r["feature"]]
    graphs = [(feature, build_flow_graph(bank, feature)) for feature in candidates]
    return max(graphs, key=lambda pair: len(pair[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--themes", nargs="+", required=True)
    args = parser.parse_args()
    model, bank, units, _, classifier = setup()
    info = prepared()
    prompt = ACTIVATION_PROMPT
    for theme in args.themes:
        start = time.perf_counter()
        scorer = SteeringScorer(model, classifier)
        reference = scorer.calibrate(prompt, generate_with_patches(model, [prompt] * SAMPLES, **SAMPLING))
        rows = [run_setting(model, scorer, prompt, theme, [], {"method": "unsteered"})]
        seed, graph = choose_seed(bank, info["themes"][theme]["ranked"])
        graph.save(RESULTS / f"graph_{theme}_seed.json")
        for s in BASELINE_STRENGTHS:
            steerer = FeatureSteerer(bank, [seed], "add", s, units=units)
            rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), {"method": "baseline", "s": s}))
        first, last = graph.span
        layers = spread([lay for lay in graph.by_layer() if first <= lay <= last], N_LAYERS)
        for layer in layers:
            for s in SINGLE_STRENGTHS:
                steerer = graph_steerer(graph, bank, layer, s, strategy="single", units=units)
                record = {"method": "single", "layer": layer, "s": s, "features": len(steerer)}
                rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), record))
            for name, schedule in SCHEDULES.items():
                for s in CUMULATIVE_STRENGTHS:
                    steerer = graph_steerer(
                        graph, bank, layer, s, strategy="cumulative", schedule=schedule, units=units
                    )
                    record = {"method": name, "layer": layer, "s": s, "features": len(steerer)}
                    rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), record))
            print(theme, "layer", layer, "done", f"{time.perf_counter() - start:.0f}s", flush=True)
        path = save(
            f"activation_{theme}.json",
            {
                "theme": theme,
                "prompt": prompt,
                "reference_perplexity": reference,
                "layers": layers,
                "seed": str(seed),
                "seed_rank": [r["feature"] for r in info["themes"][theme]["ranked"]].index(str(seed)),
                "graph_nodes": len(graph),
                "span": [first, last],
                "settings": SAMPLING,
                "samples": SAMPLES,
                "seconds": time.perf_counter() - start,
                "rows": rows,
            },
        )
        print(path, f"{time.perf_counter() - start:.0f}s", flush=True)
        if not (RESULTS / f"deactivation_{theme}.json").is_file():
            run_theme(model, bank, classifier, info, theme)


if __name__ == "__main__":
    main()
