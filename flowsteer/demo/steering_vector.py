"""Demo section: steer generation with a contrast vector (ActAdd) through one patch."""

from __future__ import annotations

import torch

from flowsteer.demo.report import DemoContext
from flowsteer.models import chat_prompts
from flowsteer.patching import AddVector, Patch, cache_sites, generate_with_patches
from flowsteer.sites import Site

ON_THEME = [
    "The bride and groom exchanged rings at the wedding ceremony.",
    "Their wedding was held in a church, and the bride wore a white dress.",
    "We danced at the wedding reception after the vows.",
    "The couple married in June, surrounded by family and friends.",
]
OFF_THEME = [
    "The committee reviewed the quarterly budget report.",
    "He parked the car and walked to the station.",
    "The recipe needs two cups of flour and an egg.",
    "The software update fixed several bugs in the parser.",
]
PROMPTS = ["Tell me about your weekend.", "Write one sentence about the weather."]


def contrast_vector(context: DemoContext, site: Site) -> torch.Tensor:
    """Mean activation on on-theme texts minus off-theme texts, over their tokens but the first
    (position 0 is an attention sink with an outsized norm)."""
    means = []
    for texts in (ON_THEME, OFF_THEME):
        acts = cache_sites(context.model, texts, [site])
        real = acts.positions >= 1
        means.append(acts[site][real].mean(0))
    return means[0] - means[1]


def run(context: DemoContext, layer: int | None = None, scale: float = 2.0) -> None:
    model = context.model
    site = Site(layer if layer is not None else model.cfg.n_layers // 5)
    context.section("Steering with one patch")
    vector = contrast_vector(context, site)
    context.say(f"contrast vector 'wedding' - 'neutral' at {site}: norm {vector.norm():.1f}")
    prompts = chat_prompts(model, PROMPTS)
    plain = generate_with_patches(model, prompts, max_new_tokens=40)
    patch = Patch(site, AddVector(vector, scale), "all")
    steered = generate_with_patches(model, prompts, [patch], max_new_tokens=40)
    context.write(
        f"A difference-in-means vector (wedding sentences minus neutral sentences, {len(ON_THEME)} each) at "
        f"site `{site}` (norm {vector.norm():.1f}), added x{scale} at every token, greedy decoding:",
        "",
        "| prompt | unsteered | steered |",
        "|---|---|---|",
    )
    for prompt, before, after in zip(PROMPTS, plain, steered, strict=True):
        context.write(f"| {prompt} | {_cell(before)} | {_cell(after)} |")
        context.say(f"{prompt!r}\n      before: {before[:100]!r}\n      after:  {after[:100]!r}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
