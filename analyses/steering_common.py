"""What the steering analyses share: the model, the flow bank, themes, units, classifier, settings."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's flowsteer, wherever run from

import torch  # noqa: E402

from flowsteer.evals import ThemeClassifier
from flowsteer.flow.graph import FlowGraph  # noqa: E402
from flowsteer.models import load_model  # noqa: E402
from flowsteer.patching import Generation, Patch, generate_with_patches  # noqa: E402
from flowsteer.paths import cache_dir, write_json  # noqa: E402
from flowsteer.saes import SAEBank  # noqa: E402
from flowsteer.steering import (
    SteeringScorer,
    load_themes,
    typical_activations,  # noqa: E402,
)

RESULTS = Path(__file__).resolve().parent / "results" / "steering"
BANK = cache_dir("saes") / "smollm2-135m-instruct-flow"
THEMES = ("religion", "wedding", "programming")
# Generation as in the paper (top-p 0.7, T 1.27), shortened for CPU; one fixed seed for every setting.
SAMPLES, NEW_TOKENS, SEED = 20, 24, 1234
SAMPLING = dict(do_sample=True, top_p=0.7, temperature=1.27, seed=SEED, max_new_tokens=NEW_TOKENS)
# STEER_DRY=1: a smoke run of the whole pipeline (layers 9-15, 2 samples, 4 tokens, fewer settings, /tmp).
DRY = bool(os.environ.get("STEER_DRY"))
if DRY:
    RESULTS, SAMPLES, NEW_TOKENS = Path("/tmp/steer_dry"), 2, 4
    SAMPLING = dict(SAMPLING, max_new_tokens=NEW_TOKENS)
ACTIVATION_PROMPT = "I think"
DEACTIVATION_PROMPTS = {
    "religion": "I think that the most important lesson of the Bible is",
    "wedding": "I think that the most beautiful moment of a wedding is",
    "programming": "I think that the hardest part of writing Python code is",
}


def setup():
    # One thread: on this shared 2-core machine two threads ran 3x slower than one under contention.
    torch.set_num_threads(int(os.environ.get("STEER_THREADS", 1)))
    model = load_model(device="cpu")
    if DRY:
        bank = SAEBank.load(
            BANK, model, sites=[f"{layer}/{kind}" for layer in range(9, 16) for kind in ("res", "mlp", "att")]
        )
        units = typical_activations(model, bank, tokens=256, cache=False)
    else:
        bank = SAEBank.load(BANK, model)
        units = typical_activations(model, bank)
    themes = load_themes()
    classifier = ThemeClassifier().fit(themes)
    return model, bank, units, themes, classifier


def graphs(theme: str) -> dict[str, FlowGraph]:
    return {kind: FlowGraph.load(RESULTS / f"graph_{theme}_{kind}.json") for kind in ("seed", "union")}


def prepared() -> dict:
    return json.loads((RESULTS / "prepare.json").read_text())


def run_setting(model, scorer: SteeringScorer, prompt: str, theme: str, patches: list[Patch], info: dict) -> dict:
    """Generate SAMPLES continuations with ``patches`` and score them; a JSON-able record."""
    start = time.perf_counter()
    generation: Generation = generate_with_patches(model, [prompt] * SAMPLES, patches, **SAMPLING)
    scores = scorer(prompt, generation, theme)
    return {
        **info,
        **scores.summary(),
        "seconds": round(time.perf_counter() - start, 2),
        "examples": generation.texts[:3],
    }


def save(name: str, data: dict) -> Path:
    path = RESULTS / name
    write_json(path, data)
    return path
