"""Linear vs invertible-map refusal bypass, side by side, under the comparison protocol (`flowsteer.evals.protocol`).

Every method gets the same budget of settings (`BypassSettings`: ActAdd's strength, the trained maps' magnitude
penalty, INNSteer's α; directional ablation has no free parameter), each setting is scored on the validation prompts
by **attack success** (the gated judge: not refused, coherent, on topic), the best one is reported once on the test
prompts beside the unpatched baseline, every figure with a 95% interval, and the intervention's size with its ratio
to ActAdd's (Σ‖Δh‖ per token, the headline, and ‖Δh‖ per edit). `quick_refusal_comparison` is the demo's small
version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from transformer_lens import HookedTransformer

from flowsteer.evals.intervals import ratio_of_means
from flowsteer.evals.protocol import Method, Protocol, compare, equal_budget
from flowsteer.models.chat import chat_prompts
from flowsteer.refusal.bypass.data import BypassPrompts
from flowsteer.refusal.bypass.evaluate import BypassJudge, delta_zero_check, outcomes
from flowsteer.refusal.bypass.linear import LinearDirection, Steering, actadd, directional_ablation
from flowsteer.refusal.bypass.trained import (
    FLOW_TRAINING,
    INTERCHANGE_TRAINING,
    fit_innsteer_bypass,
    fit_interchange,
    fit_shift,
    training_config,
)

METHODS = ("actadd", "directional_ablation", "das", "nonlinear", "nonlinear_shift", "innsteer")
TRAINED = ("das", "nonlinear", "nonlinear_shift", "innsteer")
REPLIES_KEPT = 6


@dataclass(frozen=True)
class BypassSettings:
    """Each method's settings (the protocol's budget: every tuple has the same length) and training sizes."""

    actadd_strength: tuple[float, ...] = (0.5, 1.0, 2.0)
    magnitude_weight: tuple[float, ...] = (0.1, 1.0, 10.0)  # DAS, the i-ResNet map, its shift mode
    innsteer_alpha: tuple[float, ...] = (0.5, 1.0, 2.0)
    steps: int = 80
    flow_steps: int = 300
    latent_size: int = 1

    @property
    def budget(self) -> int:
        """Settings per method with a free parameter (the same for every one of them)."""
        return equal_budget((self.actadd_strength, self.magnitude_weight, self.innsteer_alpha))


def fit_method(
    model: HookedTransformer,
    name: str,
    prompts: BypassPrompts,
    direction: LinearDirection,
    setting: dict,
    settings: BypassSettings | None = None,
    *,
    seed: int = 0,
    innsteer_cache: dict | None = None,
) -> Steering:
    """One of `METHODS` at one setting (``{"strength": s}``, ``{"magnitude_weight": w}``, ``{"alpha": a}`` or
    ``{}``); INNSteer fits its flow once per ``innsteer_cache`` and only changes α."""
    settings = settings or BypassSettings()
    config = training_config(INTERCHANGE_TRAINING, steps=settings.steps, seed=seed)
    if name == "actadd":
        return actadd(direction, strength=setting["strength"])
    if name == "directional_ablation":
        return directional_ablation(direction, model.cfg.n_layers)
    if name in ("das", "nonlinear"):
        return fit_interchange(model, prompts, direction, kind=name, latent_size=settings.latent_size,
                               magnitude_weight=setting["magnitude_weight"], config=config, seed=seed)
    if name == "nonlinear_shift":
        return fit_shift(model, prompts, direction, latent_size=settings.latent_size,
                         magnitude_weight=setting["magnitude_weight"], config=config, seed=seed)
    if name == "innsteer":
        cache = innsteer_cache if innsteer_cache is not None else {}
        if "fit" not in cache:
            flow_config = training_config(FLOW_TRAINING, steps=settings.flow_steps, seed=seed)
            cache["fit"] = fit_innsteer_bypass(model, prompts, direction, config=flow_config, seed=seed)
        return cache["fit"].at(setting["alpha"])
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def _grid(name: str, settings: BypassSettings) -> list[dict]:
    if name == "actadd":
        return [{"strength": s} for s in settings.actadd_strength]
    if name == "innsteer":
        return [{"alpha": a} for a in settings.innsteer_alpha]
    if name in ("das", "nonlinear", "nonlinear_shift"):
        return [{"magnitude_weight": w} for w in settings.magnitude_weight]
    return [{}]


def compare_bypass(
    model: HookedTransformer,
    prompts: BypassPrompts,
    direction: LinearDirection,
    judge: BypassJudge,
    *,
    methods: Sequence[str] = METHODS,
    settings: BypassSettings | None = None,
    max_new_tokens: int = 48,
    n_paragraphs: int | None = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Every method of ``methods`` at ``direction``'s layer under the protocol; a JSON-able result (see the module).
    A tqdm bar counts the protocol's runs unless ``progress=False``."""
    settings = settings or BypassSettings()
    start = time.perf_counter()
    fitted: dict[tuple, Steering] = {}
    innsteer: dict = {}

    def method(name: str) -> Method:
        def run(setting, split, _seed):
            key = (name, tuple(sorted(setting.items())))
            if key not in fitted:
                fitted[key] = fit_method(model, name, prompts, direction, dict(setting), settings, seed=seed,
                                         innsteer_cache=innsteer)
            return outcomes(model, fitted[key], prompts, split, judge, max_new_tokens=max_new_tokens,
                            n_paragraphs=n_paragraphs)

        grid = _grid(name, settings)
        return Method(name, run, grid, fixed=len(grid) == 1)

    protocol = Protocol(budget=settings.budget, select="attack_success", seeds=(seed + 1, seed + 2))
    baseline = lambda setting, split, _seed: outcomes(  # noqa: E731
        model, None, prompts, split, judge, max_new_tokens=max_new_tokens, n_paragraphs=n_paragraphs)
    comparison = compare(protocol, baseline, [method(name) for name in methods], progress=progress)
    rows = {row.method: row for row in comparison.rows}
    result = {
        "model": str(model.cfg.model_name),
        "reference_model": str(judge.reference.cfg.model_name),
        "judge_calibration": {k: v for k, v in judge.calibration.to_dict().items() if k != "pool"},
        "prompts": prompts.sizes(),
        "direction": {"layer": direction.layer, "position": direction.position,
                      "norm": float(direction.direction.norm()), "selection": direction.selection},
        "settings": asdict(settings),
        "comparison": comparison.to_dict(),
        "magnitude_ratio_to_actadd": _ratios(rows),
        "replies": {name: {"harmful": row.samples["replies_harmful"][:REPLIES_KEPT],
                           "harmless": row.samples["replies_harmless"][:REPLIES_KEPT]} for name, row in rows.items()},
        "delta_zero_check": {},
    }
    check = chat_prompts(model, [item.text for item in prompts.harmful_test[:8]])
    for name in TRAINED:
        if name in rows:
            chosen = fitted[(name, tuple(sorted(rows[name].setting.items())))]
            result["delta_zero_check"][name] = delta_zero_check(model, chosen, check)
    result["seconds"] = time.perf_counter() - start
    return result


def _ratios(rows: dict) -> dict:
    """Σ‖Δh‖ per token and ‖Δh‖ per edit of each method over ActAdd's, with bootstrap intervals."""
    if "actadd" not in rows:
        return {}
    base = rows["actadd"].samples
    ratios = {}
    for name, row in rows.items():
        if name in ("baseline", "actadd"):
            continue
        ratios[name] = {
            key: ratio_of_means(row.samples[key], base[key]).to_dict()
            for key in ("delta_norm_per_token", "delta_norm_per_edit")
            if row.samples.get(key) and base.get(key)
        }
    return ratios


HEADLINE = [
    ("attack_success", "attack success"),
    ("complied", "complied (no refusal phrase)"),
    ("refused", "refused"),
    ("over_refused", "harmless refused"),
    ("kl_harmless", "KL harmless"),
    ("ce_paragraphs", "CE paragraphs"),
    ("delta_norm_per_token", "Σ‖Δh‖ per token"),
    ("delta_norm_per_edit", "‖Δh‖ per edit"),
]


def markdown_table(result: dict) -> str:
    """One row per method: chosen setting and every headline figure with its 95% interval, the Σ‖Δh‖-per-token
    ratio to ActAdd, and how attack success compares with the baseline."""
    header = ["method", "settings tried", "chosen", *(label for _, label in HEADLINE), "Σ‖Δh‖/token ÷ ActAdd",
              "attack success vs baseline"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ratios = result.get("magnitude_ratio_to_actadd", {})
    for row in result["comparison"]["rows"]:
        estimates = row["estimates"]
        cells = []
        for key, _ in HEADLINE:
            e = estimates.get(key)
            cells.append("–" if e is None else f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]")
        ratio = ratios.get(row["method"], {}).get("delta_norm_per_token")
        ratio_cell = "1" if row["method"] == "actadd" else (
            "–" if ratio is None else f"{ratio['value']:.2f} [{ratio['low']:.2f}, {ratio['high']:.2f}]")
        chosen = ", ".join(f"{k}={v}" for k, v in row["setting"].items()) or "–"
        lines.append("| " + " | ".join([row["method"], str(row["settings_tried"]), chosen, *cells, ratio_cell,
                                        row["versus_baseline"] or "–"]) + " |")
    return "\n".join(lines)


def quick_refusal_comparison(
    model: HookedTransformer,
    reference: HookedTransformer,
    *,
    layer: int = 12,
    n_train: int = 48,
    n_val: int = 16,
    n_test: int = 16,
    steps: int = 40,
    max_new_tokens: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """A small linear vs non-linear comparison for the demo: the difference-in-means direction at ``layer``
    (Arditi's selection over its post-instruction positions), ActAdd and the i-ResNet map (one setting each: ActAdd
    at strength 1, the map with magnitude weight 1 and ``steps`` steps), judged by the reply judge against
    ``reference`` on ``n_test`` held-out prompts per label, beside the baseline."""
    from flowsteer.evals.judge import default_calibration
    from flowsteer.refusal.bypass.data import bypass_prompts
    from flowsteer.refusal.bypass.linear import linear_direction
    from flowsteer.refusal.prompts import calibration_instructions

    prompts = bypass_prompts(model, n_train=n_train, n_val=n_val, n_test=n_test)
    direction = linear_direction(model, prompts, [layer])
    settings = BypassSettings(actadd_strength=(1.0,), magnitude_weight=(1.0,), innsteer_alpha=(1.0,), steps=steps)
    judge = BypassJudge(reference, default_calibration(reference, calibration_instructions()))
    return compare_bypass(model, prompts, direction, judge, methods=("actadd", "nonlinear"), settings=settings,
                          max_new_tokens=max_new_tokens, n_paragraphs=5, seed=seed, progress=progress)
