"""One comparison protocol for steering, refusal bypass and deactivation: equal budgets, held-out selection,
a baseline row, intervals on every figure.

1. Every method gets the same number of settings (``budget``); a method without a free parameter is declared
   ``fixed`` and gets one. The table says how many each tried.
2. Each setting is scored on the **validation** split (its own prompts and seeds); the best one by the
   selection metric (among those meeting the constraint, if any) is chosen there.
3. The chosen setting is run **once** on the **test** split, with fresh seeds; the unpatched baseline always
   gets a row, run the same way.
4. Every figure carries a 95% interval (`flowsteer.evals.intervals`: Wilson for rates, bootstrap for means);
   where a method's interval overlaps the baseline's on the headline metric, the table says "no difference".

A method is a function ``run(setting, split, seed) -> {metric: per-sample values}`` (flags become rates, numbers
means; other values, such as reply texts, are kept on the row unestimated); the protocol never sees prompts, so
whatever scores the outputs must have been fitted on data disjoint from both splits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from flowsteer.evals.intervals import Estimate, mean, rate

log = logging.getLogger(__name__)

Samples = Mapping[str, Sequence[float] | Sequence[bool]]
Run = Callable[[Mapping[str, Any], str, int], Samples]


@dataclass(frozen=True)
class Method:
    """A method under comparison: its settings (the search space) and how to run one on a split."""

    name: str
    run: Run
    settings: Sequence[Mapping[str, Any]] = ({},)
    fixed: bool = False  # no free parameter: one setting, nothing to select


@dataclass(frozen=True)
class Protocol:
    """How methods are compared.

    Attributes:
        budget: settings per method (every non-fixed method must bring exactly this many).
        select: the metric that picks a setting on the validation split.
        higher_is_better: direction of ``select`` (and of the headline comparison with the baseline).
        constraint: ``constraint(means) -> bool`` on a setting's validation means (e.g. KL below a bound);
            settings that fail it are chosen only when none passes (the row says so).
        splits: the (selection, report) splits passed to ``run``.
        seeds: the seeds of the selection and the report runs (different: fresh samples on test).
    """

    budget: int
    select: str
    higher_is_better: bool = True
    constraint: Callable[[Mapping[str, float]], bool] | None = None
    splits: tuple[str, str] = ("val", "test")
    seeds: tuple[int, int] = (1, 2)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"budget must be >= 1, got {self.budget}")
        if self.seeds[0] == self.seeds[1]:
            raise ValueError("selection and report runs need different seeds (fresh samples on test)")


def equal_budget(grids: Sequence[Sequence], what: str = "method") -> int:
    """The number of settings every grid holds (the protocol's budget); ValueError when they differ."""
    sizes = {len(grid) for grid in grids}
    if len(sizes) != 1:
        raise ValueError(f"every {what} needs the same number of settings, got {sorted(sizes)}")
    return sizes.pop()


def estimate(values: Sequence[float] | Sequence[bool]) -> Estimate:
    """A rate (Wilson) for booleans, a mean (bootstrap) otherwise."""
    values = list(values)
    if values and all(isinstance(v, bool) for v in values):
        return rate(values)
    return mean([float(v) for v in values])


def _numeric(values) -> bool:
    """Per-sample numbers or flags (estimated); anything else (texts, records) is carried along unestimated."""
    return bool(len(values)) and all(isinstance(v, bool | int | float) for v in values)


def _estimates(samples: Samples) -> dict[str, Estimate]:
    return {name: estimate(values) for name, values in samples.items() if _numeric(values)}


def _means(samples: Samples) -> dict[str, float]:
    return {name: float(sum(map(float, values)) / len(values)) for name, values in samples.items() if _numeric(values)}


@dataclass
class Row:
    """One method's chosen setting, measured on the report split."""

    method: str
    setting: Mapping[str, Any]
    settings_tried: int
    selection: list[dict]  # every setting's validation means
    constraint_met: bool | None
    estimates: dict[str, Estimate]
    samples: dict[str, list] = field(repr=False, default_factory=dict)
    versus_baseline: str = ""

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "setting": dict(self.setting),
            "settings_tried": self.settings_tried,
            "selection": self.selection,
            "constraint_met": self.constraint_met,
            "estimates": {name: e.to_dict() for name, e in self.estimates.items()},
            "versus_baseline": self.versus_baseline,
        }


@dataclass
class Comparison:
    """The outcome: the protocol, a baseline row and one row per method."""

    protocol: Protocol
    rows: list[Row]

    @property
    def baseline(self) -> Row:
        return self.rows[0]

    def to_dict(self) -> dict:
        p = self.protocol
        return {
            "protocol": {"budget": p.budget, "select": p.select, "higher_is_better": p.higher_is_better,
                         "splits": list(p.splits), "seeds": list(p.seeds),
                         "constraint": getattr(p.constraint, "__doc__", None) or repr(p.constraint)},
            "rows": [row.to_dict() for row in self.rows],
        }

    def markdown(self, metrics: Sequence[str] | None = None, spec: str = ".2f") -> str:
        """A table: method, settings tried, chosen setting, each metric with its interval, versus the baseline."""
        metrics = list(metrics or self.baseline.estimates)
        header = ["method", "settings tried", "chosen setting", *metrics, f"{self.protocol.select} vs baseline"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            setting = ", ".join(f"{k}={v}" for k, v in row.setting.items()) or "–"
            cells = [row.estimates[m].format(spec) if m in row.estimates else "–" for m in metrics]
            lines.append("| " + " | ".join([row.method, str(row.settings_tried), setting, *cells,
                                            row.versus_baseline or "–"]) + " |")
        return "\n".join(lines)


def compare(protocol: Protocol, baseline: Run, methods: Sequence[Method], *, progress: bool = True) -> Comparison:
    """Select each method's setting on the validation split and report it once on the test split, beside the
    baseline (see the module docstring). A tqdm bar counts the runs unless ``progress=False``; each selection
    run's score is logged (INFO)."""
    select_split, report_split = protocol.splits
    select_seed, report_seed = protocol.seeds
    runs = 1 + sum(1 + (len(m.settings) if len(m.settings) > 1 else 0) for m in methods)
    bar = tqdm(total=runs, desc="compare", unit="run", disable=not progress, leave=False)
    base_samples = {k: list(v) for k, v in baseline({}, report_split, report_seed).items()}
    bar.update()
    base_row = Row("baseline", {}, 1, [], None, _estimates(base_samples), base_samples)
    rows = [base_row]
    for method in methods:
        settings = list(method.settings)
        expected = 1 if method.fixed else protocol.budget
        if len(settings) != expected:
            raise ValueError(
                f"{method.name} brings {len(settings)} settings; the protocol gives every method {protocol.budget} "
                "(a method without a free parameter: Method(..., fixed=True) with one setting)"
            )
        selection = []
        for setting in settings:
            bar.set_postfix_str(f"{method.name} {dict(setting)}")
            means = _means(method.run(setting, select_split, select_seed)) if len(settings) > 1 else {}
            selection.append({"setting": dict(setting), "means": means})
            if means:
                bar.update()
                log.info("%s %s on %s: %s %s", method.name, dict(setting), select_split, protocol.select,
                         means.get(protocol.select))
        chosen, met = _choose(protocol, selection)
        bar.set_postfix_str(f"{method.name} {dict(chosen)} on {report_split}")
        samples = {k: list(v) for k, v in method.run(chosen, report_split, report_seed).items()}
        bar.update()
        estimates = _estimates(samples)
        rows.append(Row(method.name, chosen, len(settings), selection, met, estimates, samples,
                        _versus(protocol, estimates.get(protocol.select), base_row.estimates.get(protocol.select))))
    bar.close()
    return Comparison(protocol, rows)


def _choose(protocol: Protocol, selection: list[dict]) -> tuple[Mapping[str, Any], bool | None]:
    if len(selection) == 1:
        return selection[0]["setting"], None
    sign = 1 if protocol.higher_is_better else -1

    def score(entry: dict) -> float:
        value = entry["means"].get(protocol.select, math.nan)
        return -math.inf if math.isnan(value) else sign * value

    passing = [e for e in selection if protocol.constraint is None or protocol.constraint(e["means"])]
    pool = passing or selection
    best = max(pool, key=score)
    return best["setting"], (bool(passing) if protocol.constraint is not None else None)


def _versus(protocol: Protocol, ours: Estimate | None, base: Estimate | None) -> str:
    if ours is None or base is None:
        return ""
    if ours.overlaps(base):
        return "no difference"
    better = (ours.value > base.value) == protocol.higher_is_better
    return "better" if better else "worse"
