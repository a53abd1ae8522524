"""Theme steering under the comparison protocol (`flowsteer.evals.protocol`): every contender gets the same number
of settings, chosen on validation prompts, reported once on test prompts with a fresh seed, beside the unsteered
model, every figure with a 95% interval.

Contenders for one theme (activation: make continuations of neutral prompts about the theme):

- **prompt**: no steering; the prompt asks for the theme (one of ``prompt_templates`` per setting);
- **actadd**: the theme's difference-in-means vector (`text_mean_difference` of the ``rank`` theme texts vs all
  other ``rank`` texts) added at the seed feature's site on every token, scaled to the **same ‖Δh‖ per token** as
  the initial feature at each of its strengths (`matched_actadd`);
- **initial_feature**: the seed feature added at strength s in feature units (`FeatureSteerer`);
- **graph**: the seed's flow graph, cumulative to the graph's last layer, constant schedule, strength s
  (`graph_steerer`).

Outputs are scored by `SteeringScorer` (behaviour B from a `ThemeClassifier` trained on the ``score`` texts only,
coherence C, B×C for selection) and by their perplexity under the unsteered model (fluency). The scored texts are
generated continuations, disjoint from both text parts (`flowsteer.steering.splits`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from torch import Tensor, nn
from transformer_lens import HookedTransformer

from flowsteer.evals.classifier import ThemeClassifier
from flowsteer.evals.intervals import Estimate
from flowsteer.evals.protocol import Comparison, Method, Protocol, compare, equal_budget
from flowsteer.flow.build import build_flow_graph
from flowsteer.flow.graph import FlowGraph
from flowsteer.patching import Patch, generate_with_patches
from flowsteer.sites import FeatureId, Site
from flowsteer.steering.contrast import text_mean_difference
from flowsteer.steering.evaluate import SteeringScorer
from flowsteer.steering.magnitude import added_norm, matched_actadd, measured_norm
from flowsteer.steering.multilayer import graph_steerer
from flowsteer.steering.splits import SteeringSplits
from flowsteer.steering.steerer import FeatureSteerer
from flowsteer.steering.themes import rank_theme_features
from flowsteer.steering.units import Units

CONTENDERS = ("prompt", "actadd", "initial_feature", "graph")
METRICS = ("activation_score", "behaviour", "coherence", "perplexity", "repetition")


@dataclass(frozen=True)
class SteeringSettings:
    """Each contender's settings (equal numbers: the protocol's budget) and the sampling.

    ``feature_strengths`` are the initial feature's s; ActAdd runs at the ‖Δh‖ of each of them, so it has as many.
    """

    feature_strengths: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    graph_strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    prompt_templates: tuple[str, ...] = (
        "Write about {theme}. {prompt}",
        "The following text is about {theme}.\n{prompt}",
        "A short story about {theme}: {prompt}",
        "Talk about {theme}! {prompt}",
    )
    samples_val: int = 6
    samples_test: int = 8
    max_new_tokens: int = 24
    top_p: float = 0.7
    temperature: float = 1.27

    def __post_init__(self) -> None:
        self.budget  # noqa: B018 (raises on unequal budgets)

    @property
    def budget(self) -> int:
        """Settings per contender (the same for every one, else ValueError)."""
        return equal_budget((self.feature_strengths, self.graph_strengths, self.prompt_templates), "contender")

    def grid(self, contender: str) -> list[dict]:
        if contender == "prompt":
            return [{"template": i} for i in range(len(self.prompt_templates))]
        if contender == "graph":
            return [{"s": s} for s in self.graph_strengths]
        if contender in ("actadd", "initial_feature"):
            return [{"s": s} for s in self.feature_strengths]
        raise ValueError(f"unknown contender {contender!r}; choose from {', '.join(CONTENDERS)}")


@dataclass
class ThemeSteering:
    """What one theme is steered with: the seed feature, its flow graph and the difference-in-means vector at the
    seed's site, all built from the ``rank`` texts."""

    theme: str
    seed: FeatureId
    graph: FlowGraph
    vector: Tensor
    ranked: list[str]


def prepare_theme(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    splits: SteeringSplits,
    theme: str,
    *,
    candidates: int = 20,
    graph: Callable[[FeatureId], FlowGraph] | None = None,
) -> ThemeSteering:
    """Rank features on the ``rank`` texts (the theme vs all other classes), take as seed the residual feature with
    the largest flow graph among the ``candidates`` best (ties: the better-ranked), and build the ActAdd vector at
    the seed's site from the same texts."""
    on = splits.rank[theme]
    off = [t for name, texts in sorted(splits.rank.items()) if name != theme for t in texts]
    ranked = rank_theme_features(model, saes, on, off, theme=theme, top=candidates)
    residual = [row.feature for row in ranked if row.feature.site.kind == "resid_post"]
    if not residual:
        raise ValueError(f"no residual feature among the {candidates} best for {theme!r}; the seed must be residual")
    build = graph or (lambda feature: build_flow_graph(saes, feature))
    graphs = [(feature, build(feature)) for feature in residual]
    seed, seed_graph = max(graphs, key=lambda pair: len(pair[1]))  # max keeps the first of equals
    vector = text_mean_difference(model, on, off, seed.site)
    return ThemeSteering(theme, seed, seed_graph, vector, [str(row.feature) for row in ranked])


def theme_classifier(splits: SteeringSplits) -> ThemeClassifier:
    """The scorer's classifier, trained on the ``score`` texts only."""
    return ThemeClassifier().fit(splits.score)


def contender_patches(
    contender: str,
    setting: Mapping,
    steering: ThemeSteering,
    saes: Mapping[Site, nn.Module],
    units: Units | None,
) -> list[Patch]:
    """The patches of one contender at one setting (none for the prompt baseline)."""
    if contender == "prompt":
        return []
    if contender in ("initial_feature", "actadd"):
        feature = FeatureSteerer(saes, [steering.seed], "add", setting["s"], units=units).patches()
        if contender == "initial_feature":
            return feature
        return matched_actadd(steering.vector, steering.seed.site, added_norm(feature))
    if contender == "graph":
        return graph_steerer(steering.graph, saes, steering.graph.span[1], setting["s"], strategy="cumulative",
                             units=units).patches()
    raise ValueError(f"unknown contender {contender!r}; choose from {', '.join(CONTENDERS)}")


def compare_theme(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    splits: SteeringSplits,
    steering: ThemeSteering,
    scorer: SteeringScorer,
    *,
    units: Units | None = None,
    settings: SteeringSettings | None = None,
    contenders: Sequence[str] = CONTENDERS,
    seeds: tuple[int, int] = (1, 2),
    progress: bool = True,
) -> dict:
    """Every contender for ``steering.theme`` under the protocol (select on val by B×C, report once on test), the
    unsteered model as the baseline row; the scorer's coherence reference is calibrated on unsteered val samples.

    Returns a JSON-able dict: ``comparison`` (`Comparison.to_dict`), ``delta_norm_per_token`` (measured Σ‖Δh‖ per
    token of every contender's every setting on val and the chosen one on test), ``pairwise`` ("no difference"
    where two rows' B×C intervals overlap), ``examples`` and the ``reference_perplexity``.
    """
    settings = settings or SteeringSettings()
    theme = steering.theme
    sampling = dict(do_sample=True, top_p=settings.top_p, temperature=settings.temperature,
                    max_new_tokens=settings.max_new_tokens)
    norms: dict[str, list[dict]] = {name: [] for name in ("baseline", *contenders)}

    def expanded(split: str) -> list[str]:
        prompts = {"val": splits.val, "test": splits.test}[split]
        n = settings.samples_val if split == "val" else settings.samples_test
        return [p for p in prompts for _ in range(n)]

    def generate_and_score(name: str, setting: Mapping, split: str, seed: int) -> dict:
        prompts = expanded(split)
        patches = contender_patches(name, setting, steering, saes, units) if name != "baseline" else []
        asked = prompts
        if name == "prompt":
            template = settings.prompt_templates[setting["template"]]
            asked = [template.format(theme=theme, prompt=p) for p in prompts]
        generation = generate_with_patches(model, asked, patches, seed=seed, **sampling)
        scores = scorer(prompts, generation, theme)  # fluency given the held-out prompt alone, for every contender
        norms[name].append({"setting": dict(setting), "split": split,
                            "value": measured_norm(model, sorted(set(prompts)), patches)})
        finite = scores.perplexity[scores.perplexity.isfinite()]
        return {
            "activation_score": scores.combined().tolist(),
            "behaviour": scores.behaviour.tolist(),
            "coherence": scores.coherence.tolist(),
            "perplexity": finite.tolist(),
            "repetition": scores.repetition.tolist(),
            "texts": list(generation.texts),
        }

    scorer.calibrate(expanded("val"), generate_with_patches(model, expanded("val"), seed=seeds[0], **sampling))
    methods = [Method(name, (lambda setting, split, seed, name=name: generate_and_score(name, setting, split, seed)),
                      settings.grid(name)) for name in contenders]
    protocol = Protocol(budget=settings.budget, select="activation_score", seeds=seeds)
    baseline = lambda setting, split, seed: generate_and_score("baseline", setting, split, seed)  # noqa: E731
    comparison = compare(protocol, baseline, methods, progress=progress)
    return {
        "theme": theme,
        "seed_feature": str(steering.seed),
        "graph_nodes": len(steering.graph),
        "graph_span": list(steering.graph.span),
        "actadd_vector_norm": float(steering.vector.norm()),
        "ranked": steering.ranked,
        "reference_perplexity": scorer.reference,
        "settings": asdict(settings),
        "splits": splits.sizes(),
        "comparison": comparison.to_dict(),
        "delta_norm_per_token": norms,
        "pairwise": pairwise(comparison, "activation_score"),
        "examples": {row.method: row.samples["texts"][:: max(1, settings.samples_test)][:4] for row in comparison.rows},
    }


def verdict(a: Estimate, b: Estimate) -> str:
    """"no difference" where the 95% intervals overlap, else which is higher."""
    if a.overlaps(b):
        return "no difference"
    return "higher" if a.value > b.value else "lower"


def pairwise(comparison: Comparison, metric: str) -> list[dict]:
    """Every pair of rows on ``metric``: ``first`` is higher / lower than ``second``, or "no difference"."""
    rows = [row for row in comparison.rows if metric in row.estimates]
    return [{"first": a.method, "second": b.method, "metric": metric,
             "verdict": verdict(a.estimates[metric], b.estimates[metric])}
            for a, b in itertools.combinations(rows, 2)]


LABELS = {"activation_score": "B×C", "behaviour": "B (P(theme))", "coherence": "C", "perplexity": "perplexity",
          "repetition": "repetition"}


def markdown_table(result: dict, spec: str = ".3f") -> str:
    """One row per contender (the baseline first): settings tried, chosen setting, every metric with its 95%
    interval on the test split, the measured Σ‖Δh‖ per token of the chosen setting, B×C versus the baseline."""
    header = ["method", "settings tried", "chosen", *(LABELS[m] for m in METRICS), "Σ‖Δh‖/token",
              "B×C vs baseline"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["comparison"]["rows"]:
        cells = []
        for metric in METRICS:
            e = row["estimates"].get(metric)
            cells.append("–" if e is None else Estimate.from_dict(e).format(".1f" if metric == "perplexity" else spec))
        tested = [r["value"] for r in result["delta_norm_per_token"].get(row["method"], []) if r["split"] == "test"]
        norm = f"{tested[-1]:.1f}" if tested else "–"
        chosen = ", ".join(f"{k}={v}" for k, v in row["setting"].items()) or "–"
        lines.append("| " + " | ".join([row["method"], str(row["settings_tried"]), chosen, *cells, norm,
                                        row["versus_baseline"] or "–"]) + " |")
    return "\n".join(lines)
