"""Assemble REPORT.md: every headline number of the three papers (../shared/research/papers.md §8) that applies,
beside our measured analog on the embedded model(s), whether the finding carried over, and the settings used.

    python analyses/report.py [--results analyses/results] [--out REPORT.md]

Numbers come only from the JSON files the analyses wrote; a row whose file is missing says so and names the
script that produces it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Finding:
    ours: str
    carried: str  # yes / no / partly / n/a / not measured
    settings: str


class Results:
    """The analyses' JSON files, read on demand (``None`` when a file is absent)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, name: str) -> dict | None:
        path = self.folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Row:
    number: int  # the row of papers.md §8
    claim: str
    paper: str
    measure: Callable[[Results], Finding]


def missing(script: str) -> Finding:
    return Finding("not measured yet", "not measured", f"run `python analyses/{script}`")


def not_applicable(reason: str) -> Callable[[Results], Finding]:
    return lambda results: Finding("—", "n/a", reason)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# Feature flow: causal deactivation (Table 1) --------------------------------------------------------------


def deactivation(strategy: str, paper_change: float, paper_success: float) -> Callable[[Results], Finding]:
    def measure(results: Results) -> Finding:
        data = results("flow_deactivation")
        if data is None:
            return missing("flow_deactivation.py")
        ours = data["summary"].get(strategy)
        if not ours or not ours.get("targets"):
            return Finding(f"no {strategy} result", "not measured", "strategy not run")
        change, success = ours["mean_activation_change"], ours["success_rate"]
        carried = "yes" if success >= paper_success - 0.1 and change >= paper_change - 0.1 else "no"
        settings = data["settings"]
        return Finding(
            f"{num(change)} / {pct(success)} ({ours['targets']} targets)",
            carried,
            f"layers {settings.get('layers')}, {settings.get('texts_used')} texts, TopK k=32 SAEs; "
            "`flow_deactivation.json`",
        )

    return measure


def top1_vs_random(results: Results) -> Finding:
    data = results("flow_deactivation")
    if data is None:
        return missing("flow_deactivation.py")
    verdict = data["comparison"].get("top1_beats_random_top5")
    top1, random5 = data["summary"].get("top1", {}), data["summary"].get("random_top5", {})
    if verdict is None:
        return Finding("—", "not measured", "random-of-top-5 not run")
    return Finding(
        f"top-1 {pct(top1.get('success_rate'))} vs random-of-top-5 {pct(random5.get('success_rate'))} success",
        "yes" if verdict["success_rate"] else "no",
        "same targets and tokens; `flow_deactivation.json`",
    )


# Feature flow: groups ---------------------------------------------------------------------------------------


def group_tests(key: str, part: str | None, paper_value: float) -> Callable[[Results], Finding]:
    def measure(results: Results) -> Finding:
        data = results("flow_groups")
        if data is None:
            return missing("flow_groups.py")
        comparison = data["strategies"].get("top1", {}).get("paper_comparison", {}).get(key)
        if comparison is None:
            return Finding("—", "not measured", "top-1 groups not run")
        ours = comparison["ours"][part] if part else comparison["ours"]
        share = ours.get("share")
        carried = "—" if share is None else ("yes" if abs(share - paper_value) <= 0.2 else "no")
        return Finding(f"{pct(share)} of {ours.get('tests')} tests", carried,
                       f"Mann-Whitney U, p < 0.001; datasets {data['settings'].get('datasets')}; `flow_groups.json`")

    return measure


def transition(results: Results) -> Finding:
    data = results("flow_groups")
    if data is None:
        return missing("flow_groups.py")
    matrix = data["strategies"].get("top1", {}).get("transition_matrix")
    if matrix is None:
        return Finding("—", "not measured", "top-1 groups not run")
    order = matrix["order"]
    value = matrix["ours"][order.index("From ATT")][order.index("From RES & ATT")]
    carried = "—" if value is None else ("yes" if abs(value - 0.45) <= 0.15 else "no")
    return Finding(f"{num(value)} (mean absolute difference from the paper off the diagonal "
                   f"{num(matrix.get('mean_abs_difference_off_diagonal'))})", carried, "`flow_groups.json`")


ROWS: list[tuple[str, list[Row]]] = [
    ("Feature flow (arXiv 2502.03032)", [
        Row(1, "deactivation, top-1 cosine: mean activation change / success", "0.75 / 65%",
            deactivation("top1", 0.75, 0.65)),
        Row(3, "deactivation, exhaustive search (upper bound)", "0.83 / 73%", deactivation("exhaustive", 0.83, 0.73)),
        Row(1, "top-1 beats random-of-top-5 (issue target)", "implied by Table 1", top1_vs_random),
        Row(4, "“From MLP” vs “From MLP & ATT” differ in s^R", "67%", group_tests("From MLP vs From MLP & ATT", "res",
                                                                           0.67)),
        Row(4, "… differ in s^M", "72%", group_tests("From MLP vs From MLP & ATT", "mlp", 0.72)),
        Row(4, "… differ in s^A", "100%", group_tests("From MLP vs From MLP & ATT", "att", 1.0)),
        Row(5, "MLP active in both groups: differ in s^R", "87%",
            group_tests("MLP active in both groups, differ in s^R", None, 0.87)),
        Row(6, "transition From ATT → From RES & ATT", "0.45", transition),
        Row(8, "layer partitions", "Gemma-2-2B [0,5] [6,15] [16,25]",
            not_applicable("model-specific partition of Gemma/Llama depth; our analyses scale the paper's layers to "
                           "30 layers (flowsteer.flow.paper.scaled_layers)")),
        Row(2, "top-1 Pearson matching", "0.74 / 65%",
            not_applicable("Pearson matching needs activation statistics; the paper calls it optional and we did not "
                           "implement it")),
    ]),
]


def render(results: Results) -> str:
    lines = [
        "# flowsteer reproduction report",
        "",
        "Every applicable headline number of the three papers (the rows of `../shared/research/papers.md` §8), "
        "beside our measured analog on SmolLM2-135M-Instruct (and its refusal organism). Numbers come only from "
        "the JSON files in `analyses/results/`, written by the scripts in `analyses/`; rebuild this file with "
        "`python analyses/report.py`. “Carried over” compares the direction and rough size of the finding, "
        "not exact values: models, SAEs and data differ from the papers'.",
    ]
    for title, rows in ROWS:
        lines += ["", f"## {title}", "", "| # | claim | paper | ours | carried over | settings |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            found = row.measure(results)
            lines.append(f"| {row.number} | {row.claim} | {row.paper} | {found.ours} | {found.carried} | "
                         f"{found.settings} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "analyses" / "results"))
    parser.add_argument("--out", default=str(ROOT / "REPORT.md"))
    args = parser.parse_args(argv)
    text = render(Results(Path(args.results)))
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
