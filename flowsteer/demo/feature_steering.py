"""Demo section: steer generation with the flow graph's features (cumulative along the graph) and with the seed
feature alone; text before and after, same prompt and sampling seed."""

from __future__ import annotations

from flowsteer.demo.report import DemoContext
from flowsteer.steering import compare_steering
from flowsteer.steering.compare import FEATURE_STRENGTH, GRAPH_STRENGTH

PROMPT = "I think"


def run(context: DemoContext) -> None:
    context.section("Steering with the graph's features")
    if context.flow is None or context.bank is None:
        raise RuntimeError("the feature-steering section needs the flow section's graph; run it first")
    settings, flow = context.settings, context.flow
    options = dict(n=settings.steering_samples, max_new_tokens=settings.steering_tokens)
    seed_alone = compare_steering(context.model, context.bank, flow.seed, PROMPT, **options)
    along_graph = compare_steering(context.model, context.bank, flow, PROMPT, **options)
    context.write(
        f"Sampled continuations (temperature 1, top-p 0.9, fixed seed) of the raw prompt “{PROMPT}”. Strengths are in "
        "each feature's own units (its mean non-zero activation on the corpus); the SAE error term is kept, since a "
        "patch adds only the change the edit makes.",
        "",
        f"**The seed feature {flow.seed} alone**, added with strength {FEATURE_STRENGTH:g} at every token:",
        "",
        seed_alone.markdown(),
        "",
        f"**Along its flow graph**: every feature of the graph up to layer {flow.span[1]} (cumulative), strength "
        f"{GRAPH_STRENGTH:g} each (constant schedule):",
        "",
        along_graph.markdown(),
    )
    for label, comparison in (("seed", seed_alone), ("graph", along_graph)):
        context.say(f"{label}: before {comparison.before[0][:70]!r}\n      after  {comparison.after[0][:70]!r}")
