"""Demo section: bypass the refusal organism's refusals, linear (ActAdd) vs the i-ResNet map, judged by the reply
judge against the demo's base model, with ||Δh||.

Uses `flowsteer.refusal.bypass.quick_refusal_comparison` on the refusal organism (``load_model`` makes it on first use
from the shipped adapter); when it cannot be loaded, the section says so and moves on.
"""

from __future__ import annotations

from flowsteer.demo.memo import memoized
from flowsteer.demo.report import DemoContext, escape
from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.models.loading import ModelLoadError, load_model
from flowsteer.refusal.bypass import markdown_table, quick_refusal_comparison
from flowsteer.refusal.organism.cache import BUILD_COMMAND, organism_dir, read_manifest


def run(context: DemoContext, model_name: str = REFUSAL_ORGANISM, layer: int = 12, **options) -> None:
    """Write the section; ``options`` go to `quick_refusal_comparison` (e.g. ``n_train``, ``steps``)."""
    context.section("Refusal bypass: linear vs invertible map")
    try:
        model = load_model(model_name, device=context.model.cfg.device)
    except ModelLoadError as error:
        context.say(f"skipped: {error}")
        context.write(f"Skipped: the refusal organism `{model_name}` could not be loaded ({error}; `{BUILD_COMMAND}`).")
        return
    context.say(f"difference-in-means direction at layer {layer}, ActAdd and the i-ResNet map, judged against "
                f"{context.model.cfg.model_name}")
    key = {"model": model_name, "build": _build(model_name), "reference": str(context.model.cfg.model_name),
           "layer": layer, "options": options}
    result = memoized("refusal-comparison", key, lambda: quick_refusal_comparison(
        model, context.model, layer=layer, progress=context.progress, **options), say=context.say)
    rows = {row["method"]: row["estimates"] for row in result["comparison"]["rows"]}
    ratio = result["magnitude_ratio_to_actadd"]["nonlinear"]["delta_norm_per_token"]
    round_trip = result["delta_zero_check"]["nonlinear"]["max_abs_logit_difference"]
    direction = result["direction"]
    context.write(
        f"On `{model_name}`, layer {direction['layer']} (difference-in-means direction at post-instruction position "
        f"{direction['position']}, Arditi's selection among that layer's positions, chosen by "
        f"{direction['selection'].get('rule', 'the filters')}). ActAdd subtracts the direction at every token; the "
        "i-ResNet map (ActNorm -> rotation -> i-ResNet blocks) is trained by interchange to lower the refusal "
        "log-odds and replaces one latent coordinate at the post-instruction tokens. "
        f"{result['prompts']['harmful_test']} held-out harmful and harmless prompts each, greedy replies judged "
        f"against the unpatched `{result['reference_model']}`: **attack success** counts a reply only when it is not "
        "a refusal, coherent (its NLL and repetition within the reference model's own 95th percentiles) and on "
        "topic (more likely given its own instruction than given others). 95% intervals in brackets.",
        "",
        markdown_table(result),
        "",
        f"Σ‖Δh‖ per token of the i-ResNet map / ActAdd's: {ratio['value']:.2f} "
        f"[{ratio['low']:.2f}, {ratio['high']:.2f}]; "
        f"δ = 0 round trip: max |Δlogit| {round_trip:.1e}; attack success baseline "
        f"{rows['baseline']['attack_success']['value']:.2f}, ActAdd {rows['actadd']['attack_success']['value']:.2f}, "
        f"i-ResNet {rows['nonlinear']['attack_success']['value']:.2f}.",
        "",
        "Two replies per method (harmful prompts):",
        "",
    )
    for name, replies in result["replies"].items():
        for reply in replies["harmful"][:2]:
            verdict = reply["verdict"]
            flag = "success" if verdict["success"] else ("refused" if verdict["refused"] else "not an answer")
            context.write(f"- **{name}** ({flag}): “{escape(reply['instruction'])}” → “{escape(reply['reply'][:160])}”")


def _build(model_name: str) -> str:
    """Which build of the model ran: the organism's adapter sha256, else the name."""
    if model_name != REFUSAL_ORGANISM:
        return model_name
    manifest = read_manifest(organism_dir())
    return manifest.get("adapter", {}).get("sha256") or manifest.get("created", "")


def run_with_settings(context: DemoContext) -> None:
    """`run` with the model and sizes of ``context.settings`` (the layer: 40% of the refusal model's depth)."""
    settings = context.settings
    options = dict(settings.refusal_options)
    options.setdefault("layer", round(0.4 * context.model.cfg.n_layers))
    run(context, model_name=settings.refusal_model, **options)
