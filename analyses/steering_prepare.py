"""Steering analyses, step 1: feature units, theme features, flow graphs, scorer validation, a pilot.

For each theme of data/themes: rank features of the flow bank by standardised mean difference
(theme texts vs the other themes and neutral texts); the **seed** for activation is the best
residual feature at layers 10-14 (the paper used layer-12 seeds of a 26-layer model); its flow
graph is built with the paper's thresholds. The **initial features** for deactivation are the 6 best
residual features; their flow graphs joined form the union graph. The scorer is validated
(5-fold accuracy of the theme classifier, out-of-fold on/off-theme separation, degenerate
repetition scored with the real model's perplexity) and a pilot sweeps the seed's strength.

    python analyses/steering_prepare.py      # writes analyses/results/steering/prepare.json, graphs
"""

from __future__ import annotations

import time

import networkx as nx
import torch
from steering_common import ACTIVATION_PROMPT, RESULTS, SAMPLES, SAMPLING, THEMES, save, setup

from flowsteer.evals import ThemeClassifier, perplexity, theme_classifier_accuracy
from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.graph import FlowGraph
from flowsteer.patching import generate_with_patches
from flowsteer.steering import (
    FeatureSteerer,
    SteeringScorer,
    coherence,
    rank_themes,
)

N_INITIAL = 6
SEED_LAYERS = range(10, 15)


def out_of_fold_auc(themes: dict[str, list[str]], folds: int = 5) -> dict[str, float]:
    """Per theme: AUC of out-of-fold P(theme) between its texts and all other texts."""
    probs = {c: [None] * len(ts) for c, ts in themes.items()}
    for fold in range(folds):
        train = {c: [t for i, t in enumerate(ts) if i % folds != fold] for c, ts in themes.items()}
        model = ThemeClassifier().fit(train)
        for c, ts in themes.items():
            held = [(i, t) for i, t in enumerate(ts) if i % folds == fold]
            if held:
                p = model.probabilities([t for _, t in held])
                for (i, _), row in zip(held, p, strict=True):
                    probs[c][i] = row
    classes = sorted(themes)
    result = {}
    for theme in THEMES:
        j = classes.index(theme)
        on = torch.stack(probs[theme])[:, j]
        off = torch.cat([torch.stack(probs[c])[:, j] for c in classes if c != theme])
        result[theme] = float(
            (on[:, None] > off[None, :]).float().mean() + 0.5 * (on[:, None] == off[None, :]).float().mean()
        )
    return result


def main() -> None:
    start = time.perf_counter()
    model, bank, units, themes, classifier = setup()
    print(f"setup {time.perf_counter() - start:.0f}s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict = {"settings": {k: v for k, v in SAMPLING.items()}, "themes": {}}
    report["classifier"] = {
        "cv_accuracy_5fold": theme_classifier_accuracy(themes),
        "out_of_fold_auc": out_of_fold_auc(themes),
        "classes": classifier.classes,
        "texts_per_class": {c: len(t) for c, t in themes.items()},
    }
    markdown = []
    rankings = rank_themes(model, bank, themes, top=40)
    print(f"ranked {time.perf_counter() - start:.0f}s", flush=True)
    for theme in THEMES:
        ranked = rankings[theme]
        markdown += [f"## {theme}", "", ranked.markdown(), ""]
        residual = [r for r in ranked if r.feature.site.kind == "resid_post"]
        seed = next(r.feature for r in residual if r.feature.layer in SEED_LAYERS)
        initial = [r.feature for r in residual[:N_INITIAL]]
        seed_graph = build_flow_graph(bank, seed)
        union = nx.DiGraph()
        for feature in initial:
            union = nx.compose(union, build_flow_graph(bank, feature).graph)
        for node in union:
            union.nodes[node]["seed"] = node in {str(f) for f in initial}
        union.graph.update(seed=str(initial[0]), initial=[str(f) for f in initial])
        union_graph = FlowGraph(union)
        seed_graph.save(RESULTS / f"graph_{theme}_seed.json")
        union_graph.save(RESULTS / f"graph_{theme}_union.json")
        report["themes"][theme] = {
            "ranked": [
                {
                    "feature": str(r.feature),
                    "smd": r.smd,
                    "mean_on": r.mean_on,
                    "mean_off": r.mean_off,
                    "tokens": list(r.tokens),
                    "context": r.context,
                }
                for r in ranked[:20]
            ],
            "seed": str(seed),
            "initial": [str(f) for f in initial],
            "seed_graph": {
                "nodes": len(seed_graph),
                "span": seed_graph.span,
                "per_layer": {str(k): v for k, v in seed_graph.nodes_per_layer().items()},
            },
            "union_graph": {"nodes": len(union_graph), "span": union_graph.span},
        }
        print(
            theme,
            "seed",
            seed,
            "graph",
            len(seed_graph),
            seed_graph.span,
            "initial",
            initial,
            "union",
            len(union_graph),
            flush=True,
        )
    (RESULTS / "theme_features.md").write_text("\n".join(markdown))

    # Scorer validation on the real model: unsteered samples, and degenerate repetition.
    scorer = SteeringScorer(model, classifier)
    prompt = ACTIVATION_PROMPT
    plain = generate_with_patches(model, [prompt] * SAMPLES, **SAMPLING)
    reference = scorer.calibrate(prompt, plain)
    loops = {
        "wedding": "the wedding the wedding the wedding the wedding the wedding the wedding the wedding",
        "religion": "God God God God God God God God God God God God God God God God",
        "programming": "code code code code code code code code code code code code code code",
    }
    fluent = {
        "wedding": " the bride and groom looked so happy when they exchanged their rings in the garden.",
        "religion": " faith in God helps people through hard times, and prayer gives them comfort.",
        "programming": " the function should return a list, but the code raises an error when it is empty.",
    }
    validation = {"reference_perplexity": reference}
    for theme in THEMES:
        texts = [fluent[theme], " " + loops[theme]]
        ids = [model.tokenizer.encode(t) for t in texts]
        ppl = perplexity(model, [prompt, prompt], ids)
        c = coherence(ppl, texts, reference)
        b = classifier.probability(texts, theme)
        validation[theme] = {
            "fluent": {"B": float(b[0]), "C": float(c[0]), "ppl": float(ppl[0]), "BxC": float(b[0] * c[0])},
            "loop": {"B": float(b[1]), "C": float(c[1]), "ppl": float(ppl[1]), "BxC": float(b[1] * c[1])},
        }
    plain_scores = {t: scorer(prompt, plain, t).summary() for t in THEMES}
    validation["unsteered_I_think"] = plain_scores
    report["scorer_validation"] = validation

    # Pilot: the seed alone, added at every token, over a range of strengths (sets the grids).
    pilot = {}
    for theme in THEMES:
        seed = report["themes"][theme]["seed"]
        rows = []
        for s in (2, 4, 8, 16, 32):
            steerer = FeatureSteerer(bank, [seed], "add", s, units=units)
            t0 = time.perf_counter()
            generation = steerer.generate(model, [prompt] * SAMPLES, **SAMPLING)
            summary = scorer(prompt, generation, theme).summary()
            rows.append({"strength": s, **summary, "seconds": time.perf_counter() - t0, "example": generation[0]})
            print(
                theme,
                s,
                {k: round(v, 3) for k, v in summary.items() if isinstance(v, float)},
                repr(generation[0][:80]),
                flush=True,
            )
        pilot[theme] = rows
    report["pilot_seed_strength"] = pilot
    report["seconds"] = time.perf_counter() - start
    print(save("prepare.json", report), f"{report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
