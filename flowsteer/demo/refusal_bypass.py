"""Demo section: bypass the refusal organism's refusals, linear (ActAdd) vs the i-ResNet map, with ||Δh||.

Uses `flowsteer.refusal.bypass.quick_refusal_comparison` (177 s in a demo run on 2 idle cores) on its own
model, the refusal organism (``load_model`` builds it on first use: 236 s once on 2 idle cores); when it
cannot be loaded or built, the section says so and moves on.
"""

from __future__ import annotations

from flowsteer.demo.report import DemoContext
from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.models.loading import ModelLoadError, load_model
from flowsteer.refusal.bypass import markdown_table, quick_refusal_comparison
from flowsteer.refusal.organism.cache import BUILD_COMMAND


def run(context: DemoContext, model_name: str = REFUSAL_ORGANISM, layer: int = 12, **options) -> None:
    """Write the section; ``options`` go to `quick_refusal_comparison` (e.g. ``n_train``, ``steps``)."""
    context.section("Refusal bypass: linear vs invertible map")
    try:
        model = load_model(model_name, device=context.model.cfg.device)
    except ModelLoadError as error:
        context.say(f"skipped: {error}")
        context.write(f"Skipped: the refusal organism `{model_name}` could not be loaded ({error}; `{BUILD_COMMAND}`).")
        return
    comparison = quick_refusal_comparison(model, layer=layer, log=context.say, **options)
    results = comparison["results"]
    nonlinear = results["nonlinear"]
    round_trip = comparison["delta_zero_check"]["nonlinear"]["max_abs_logit_difference"]
    still_refused = {name: r["harmful"]["log_odds_refusal_rate"] for name, r in results.items()}
    context.write(
        f"On `{model_name}`, layer {comparison['layer']} (difference-in-means direction at post-instruction "
        f"position {comparison['direction']['position']}, Arditi's selection among that layer's positions, chosen "
        f"by {comparison['direction']['selection'].get('rule', 'the filters')}): "
        "ActAdd subtracts the direction at every token; the i-ResNet map (ActNorm -> rotation -> i-ResNet blocks) "
        "is trained by interchange to lower the refusal log-odds and replaces one latent coordinate at the "
        f"post-instruction tokens. {comparison['prompts']['harmful_test']} held-out harmful and harmless prompts "
        "each, judged by refusal log-odds (no generation).",
        "",
        markdown_table(comparison),
        "",
        f"Mean ‖Δh‖ of the i-ResNet map / ActAdd's: {nonlinear['magnitude']['mean_delta_norm_ratio_to_actadd']:.3f}; "
        f"δ = 0 round trip: max |Δlogit| {round_trip:.1e}; harmful prompts still refused (log-odds > 0): "
        f"baseline {still_refused['baseline']:.2f}, ActAdd {still_refused['actadd']:.2f}, "
        f"i-ResNet {still_refused['nonlinear']:.2f}.",
    )


def run_with_settings(context: DemoContext) -> None:
    """`run` with the model and sizes of ``context.settings`` (the layer: 40% of the refusal model's depth)."""
    settings = context.settings
    options = dict(settings.refusal_options)
    options.setdefault("layer", round(0.4 * context.model.cfg.n_layers))
    run(context, model_name=settings.refusal_model, **options)
