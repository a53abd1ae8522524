"""`compare_steering`: one call that shows text before and after steering (for the demo and notebooks).

Given a seed feature (steered alone) or a `FlowGraph` (steered along the graph, cumulative up to
``layer``, exponential schedule by default), generate from the same prompt with the same seed with
and without the steering patches. Feature units for TopK SAEs are measured on the corpus for the
steered sites only (cached per SAE, shared with the analyses) unless ``units`` are given.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn
from transformer_lens import HookedTransformer

from flowsteer.display import markdown_table
from flowsteer.flow.folding import is_jumprelu
from flowsteer.flow.graph import FlowGraph
from flowsteer.patching import generate_with_patches
from flowsteer.sites import FeatureId, Site
from flowsteer.steering.multilayer import Strategy, graph_steerer
from flowsteer.steering.schedules import Constant, Schedule
from flowsteer.steering.steerer import FeatureSteerer
from flowsteer.steering.units import Units, typical_activations


@dataclass
class SteeringComparison:
    """Generations from one prompt without and with steering (same sampling seed)."""

    prompt: str
    before: list[str]
    after: list[str]
    steerer: FeatureSteerer

    def markdown(self) -> str:
        table = markdown_table(["unsteered", "steered"], zip(self.before, self.after, strict=True))
        return f"Prompt: `{self.prompt}`; {self.steerer!r}\n\n{table.rstrip()}"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(b)}</td><td>{html.escape(a)}</td></tr>"
            for b, a in zip(self.before, self.after, strict=True)
        )
        return (
            f"<p>prompt <code>{html.escape(self.prompt)}</code>: {html.escape(repr(self.steerer))}</p>"
            f"<table><tr><th>unsteered</th><th>steered</th></tr>{rows}</table>"
        )


def _units_for(model: HookedTransformer, saes: Mapping[Site, nn.Module], sites: set[Site]) -> Units | None:
    if all(is_jumprelu(saes[s]) for s in sites):
        return None
    return typical_activations(model, {s: saes[s] for s in sorted(sites)})


FEATURE_STRENGTH = 4.0  # compare_steering's default for one feature (units of its typical activation)
GRAPH_STRENGTH = 0.5  # and for each feature of a graph (constant schedule)


def compare_steering(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    target: FlowGraph | FeatureId | str,
    prompt: str,
    *,
    strength: float | None = None,
    layer: int | None = None,
    strategy: Strategy = "cumulative",
    schedule: Schedule | None = None,
    units: Units | None = None,
    n: int = 2,
    max_new_tokens: int = 32,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float | None = 0.9,
) -> SteeringComparison:
    """Generate ``n`` samples of ``prompt`` (raw text) unsteered and steered by ``target``.

    A feature is added with ``strength`` units (default 4); a graph's features are steered with
    `graph_steerer` (default: cumulative up to the span's end, constant schedule, strength 0.5). The
    defaults are the best single-feature and constant-schedule settings of the theme-activation
    experiment (docs/steering.md); twice as much turned the demo's text into run-together tokens.
    Returns a `SteeringComparison` (a table in notebooks, ``markdown()`` for reports).
    """
    if isinstance(target, FlowGraph):
        layer = target.span[1] if layer is None else layer
        from flowsteer.steering.multilayer import graph_features

        sites = {f.site for f, _ in graph_features(target, layer, strategy)}
        units = units if units is not None else _units_for(model, saes, sites)
        steerer = graph_steerer(
            target,
            saes,
            layer,
            GRAPH_STRENGTH if strength is None else strength,
            strategy=strategy,
            schedule=schedule or Constant(),
            units=units,
        )
    else:
        feature = FeatureId.parse(target) if isinstance(target, str) else target
        units = units if units is not None else _units_for(model, saes, {feature.site})
        steerer = FeatureSteerer(saes, [feature], "add", FEATURE_STRENGTH if strength is None else strength,
                                 units=units)
    options = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_p=top_p, seed=seed)
    prompts = [prompt] * n
    before = generate_with_patches(model, prompts, **options).texts
    after = steerer.generate(model, prompts, **options).texts
    return SteeringComparison(prompt, before, after, steerer)
