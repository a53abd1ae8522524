"""Steering analyses, step 2: theme deactivation (Feature Flow §5.3, Figs. 9-10) on the embedded model.

From a theme-eliciting prompt, rescale features by r in {0, -1, -2, -4, -8, -16} at every token:

- **initial**: the theme's 6 initial features (best residual features by standardised mean difference);
- **graph, all**: every feature of the union of the initial features' flow graphs;
- **graph, single**: the union graph's features at layer l only;
- **graph, cumulative**: the union graph's features at all layers <= l;

for 2 layers l at the thirds of the graph's layers (the paper sweeps every layer; cut for CPU). Each
setting: 20 samples (top-p 0.7, T 1.27, fixed seed, 24 new tokens), scored (1 - B) x C.

    python analyses/steering_deactivation.py --themes religion   # writes results/steering/deactivation_<theme>.json
"""

from __future__ import annotations

import argparse
import time

from steering_common import DEACTIVATION_PROMPTS, DRY, SAMPLES, SAMPLING, graphs, prepared, run_setting, save, setup

from flowsteer.patching import generate_with_patches
from flowsteer.steering import (
    FeatureSteerer,
    SteeringScorer,
    graph_steerer,
)

FACTORS = (0.0, -2.0) if DRY else (0.0, -1.0, -2.0, -4.0, -8.0, -16.0)
N_LAYERS = 1 if DRY else 2


def spread(layers: list[int], n: int) -> list[int]:
    """``n`` layers at the interior quantiles (i + 1) / (n + 1) of the sorted ``layers``."""
    if len(layers) <= n:
        return layers
    return sorted({layers[round((i + 1) * (len(layers) - 1) / (n + 1))] for i in range(n)})


def run_theme(model, bank, classifier, info: dict, theme: str) -> None:
    """The deactivation experiment of one theme; writes deactivation_<theme>.json."""
    start = time.perf_counter()
    prompt = DEACTIVATION_PROMPTS[theme]
    scorer = SteeringScorer(model, classifier)
    plain = generate_with_patches(model, [prompt] * SAMPLES, **SAMPLING)
    reference = scorer.calibrate(prompt, plain)
    rows = [run_setting(model, scorer, prompt, theme, [], {"method": "unsteered"})]
    initial = info["themes"][theme]["initial"]
    for r in FACTORS:
        steerer = FeatureSteerer(bank, initial, "rescale", r)
        rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), {"method": "initial", "r": r}))
    union = graphs(theme)["union"]
    all_layers = [lay for lay in union.by_layer() if lay >= 0]
    for r in FACTORS:  # the whole graph: cumulative at its last layer
        steerer = graph_steerer(union, bank, all_layers[-1], r, strategy="cumulative", mode="rescale")
        record = {"method": "graph-all", "layer": all_layers[-1], "r": r, "features": len(steerer)}
        rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), record))
    layers = spread(all_layers, N_LAYERS)
    for layer in layers:
        for strategy in ("single", "cumulative"):
            for r in FACTORS:
                steerer = graph_steerer(union, bank, layer, r, strategy=strategy, mode="rescale")
                record = {"method": f"graph-{strategy}", "layer": layer, "r": r, "features": len(steerer)}
                rows.append(run_setting(model, scorer, prompt, theme, steerer.patches(), record))
        print(theme, "layer", layer, "done", f"{time.perf_counter() - start:.0f}s", flush=True)
    path = save(
        f"deactivation_{theme}.json",
        {
            "theme": theme,
            "prompt": prompt,
            "reference_perplexity": reference,
            "layers": layers,
            "factors": list(FACTORS),
            "initial": initial,
            "graph_nodes": len(union),
            "settings": SAMPLING,
            "samples": SAMPLES,
            "seconds": time.perf_counter() - start,
            "rows": rows,
        },
    )
    print(path, f"{time.perf_counter() - start:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--themes", nargs="+", required=True)
    args = parser.parse_args()
    model, bank, _, _, classifier = setup()
    info = prepared()
    for theme in args.themes:
        run_theme(model, bank, classifier, info, theme)


if __name__ == "__main__":
    main()
