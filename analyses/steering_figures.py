"""Steering analyses, step 4: figures like Feature Flow's Figs. 9-11 and the per-theme verdicts.

Reads results/steering/{deactivation,activation}_<theme>.json and writes

- ``fig_deactivation.png``: top row (Fig. 9) (1 - B) x C per layer for each r, single vs cumulative;
  bottom row (Fig. 10) best over layers vs r, graph single / cumulative vs the initial features;
- ``fig_activation.png`` (Fig. 11): best B x C over s per layer for single / constant / linear /
  exponential, the seed-only baseline's best as a line; second row B against C for every setting;
- ``summary.json``: per theme, the best setting of each method and the comparison **at equal
  coherence**: among settings whose mean coherence is at least c·C0 (C0 the unsteered generations'
  mean coherence, c = 0.5 and 0.8), the highest
  (activation) or lowest (deactivation) behavioural score of graph-based vs initial-features steering;
  ``summary.md`` the same as tables.

    python analyses/steering_figures.py
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from steering_common import RESULTS, THEMES, save  # noqa: E402

LEVELS = (0.5, 0.8)  # shares of the unsteered generations' mean coherence C0
ACTIVATION_METHODS = ("single", "constant", "linear", "exponential")


def load(kind: str) -> dict[str, dict]:
    found = {}
    for theme in THEMES:
        path = RESULTS / f"{kind}_{theme}.json"
        if path.is_file():
            found[theme] = json.loads(path.read_text())
    return found


def best(rows: list[dict], key: str, lowest: bool = False) -> dict | None:
    if not rows:
        return None
    return min(rows, key=lambda r: r[key]) if lowest else max(rows, key=lambda r: r[key])


def at_coherence(rows: list[dict], level: float, lowest: bool) -> dict | None:
    """The setting with the best behaviour among those with mean coherence >= level."""
    return best([r for r in rows if r["coherence"] >= level], "behaviour", lowest)


def brief(row: dict | None) -> dict | None:
    if row is None:
        return None
    keys = (
        "method",
        "layer",
        "r",
        "s",
        "features",
        "behaviour",
        "coherence",
        "activation_score",
        "deactivation_score",
        "activation_score_se",
        "deactivation_score_se",
    )
    return {k: row[k] for k in keys if k in row}


def compare(graph_rows: list[dict], base_rows: list[dict], score: str, lowest: bool, c0: float) -> dict:
    out = {
        "unsteered_coherence": c0,
        "best_score": {"graph": brief(best(graph_rows, score)), "initial": brief(best(base_rows, score))},
    }
    g, b = out["best_score"]["graph"], out["best_score"]["initial"]
    out["graph_beats_initial_on_score"] = bool(g and b and g[score] > b[score])
    for level in LEVELS:
        g, b = at_coherence(graph_rows, level * c0, lowest), at_coherence(base_rows, level * c0, lowest)
        better = None
        if g and b:
            better = g["behaviour"] < b["behaviour"] if lowest else g["behaviour"] > b["behaviour"]
        elif g:
            better = True
        elif b:
            better = False
        entry = {"graph": brief(g), "initial": brief(b), "graph_better": better}
        if g and b:  # is the behaviour difference beyond two standard errors?
            diff, se = g["behaviour"] - b["behaviour"], (g["behaviour_se"] ** 2 + b["behaviour_se"] ** 2) ** 0.5
            entry |= {"behaviour_difference": diff, "difference_se": se, "beyond_2se": abs(diff) > 2 * se}
        out[f"coherence_at_least_{level}"] = entry
    return out


def deactivation_figures(data: dict[str, dict], summary: dict) -> None:
    if not data:
        return
    fig, axes = plt.subplots(2, len(data), figsize=(5 * len(data), 8), squeeze=False)
    for col, (theme, d) in enumerate(data.items()):
        rows = d["rows"]
        plain = next(r for r in rows if r["method"] == "unsteered")
        colors = plt.cm.viridis_r([i / max(1, len(d["factors"]) - 1) for i in range(len(d["factors"]))])
        ax = axes[0, col]
        for r, color in zip(d["factors"], colors, strict=True):
            for strategy, style in (("single", "--"), ("cumulative", "-")):
                pts = sorted(
                    (x["layer"], x["deactivation_score"])
                    for x in rows
                    if x["method"] == f"graph-{strategy}" and x["r"] == r
                )
                ax.plot(
                    *zip(*pts, strict=True),
                    style,
                    color=color,
                    marker="o",
                    ms=3,
                    label=f"r={r:g}" if strategy == "cumulative" else None,
                )
        ax.axhline(plain["deactivation_score"], color="grey", lw=0.8, label="unsteered")
        ax.set(title=f"{theme}: (1-B)xC per layer (-- single, — cumulative)", xlabel="layer l", ylabel="score")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        methods = (("graph-single", "--o"), ("graph-cumulative", "-o"), ("graph-all", "-.^"), ("initial", ":s"))
        for method, style in methods:
            pts = []
            for r in d["factors"]:
                chosen = best([x for x in rows if x["method"] == method and x["r"] == r], "deactivation_score")
                pts.append((r, chosen["deactivation_score"], chosen["deactivation_score_se"]))
            xs, ys, es = zip(*pts, strict=True)
            ax.errorbar(
                xs, ys, yerr=es, fmt=style, capsize=2, label=method + (" (best layer)" if "graph" in method else "")
            )
        ax.axhline(plain["deactivation_score"], color="grey", lw=0.8, label="unsteered")
        ax.set(title=f"{theme}: best score vs r", xlabel="r", ylabel="(1-B)xC")
        ax.legend(fontsize=7)
        graph_rows = [x for x in rows if x["method"].startswith("graph")]
        summary.setdefault(theme, {})["deactivation"] = {
            "unsteered": brief(plain),
            **compare(
                graph_rows,
                [x for x in rows if x["method"] == "initial"],
                "deactivation_score",
                True,
                plain["coherence"],
            ),
        }
    fig.tight_layout()
    fig.savefig(RESULTS / "fig_deactivation.png", dpi=120)
    plt.close(fig)


def activation_figures(data: dict[str, dict], summary: dict) -> None:
    if not data:
        return
    fig, axes = plt.subplots(2, len(data), figsize=(5 * len(data), 8), squeeze=False)
    for col, (theme, d) in enumerate(data.items()):
        rows = d["rows"]
        plain = next(r for r in rows if r["method"] == "unsteered")
        baseline = [r for r in rows if r["method"] == "baseline"]
        ax = axes[0, col]
        for method in ACTIVATION_METHODS:
            pts = []
            for layer in d["layers"]:
                chosen = best(
                    [x for x in rows if x["method"] == method and x.get("layer") == layer], "activation_score"
                )
                pts.append((layer, chosen["activation_score"], chosen["activation_score_se"]))
            xs, ys, es = zip(*pts, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, label=method)
        top = best(baseline, "activation_score")
        ax.axhline(top["activation_score"], color="black", ls=":", label=f"seed only (best s={top['s']:g})")
        ax.axhline(plain["activation_score"], color="grey", lw=0.8, label="unsteered")
        ax.set(title=f"{theme}: best BxC over s, per layer", xlabel="layer l", ylabel="BxC")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for method in (*ACTIVATION_METHODS, "baseline"):
            pts = [(x["coherence"], x["behaviour"]) for x in rows if x["method"] == method]
            ax.scatter(*zip(*pts, strict=True), s=12, label=method, marker="x" if method == "baseline" else "o")
        ax.scatter([plain["coherence"]], [plain["behaviour"]], color="grey", marker="*", s=60, label="unsteered")
        ax.set(title=f"{theme}: behaviour vs coherence (each setting)", xlabel="coherence C", ylabel="behaviour B")
        ax.legend(fontsize=7)
        graph_rows = [x for x in rows if x["method"] in ACTIVATION_METHODS]
        summary.setdefault(theme, {})["activation"] = {
            "unsteered": brief(plain),
            "best_per_method": {
                m: brief(best([x for x in rows if x["method"] == m], "activation_score"))
                for m in (*ACTIVATION_METHODS, "baseline")
            },
            **compare(graph_rows, baseline, "activation_score", False, plain["coherence"]),
        }
    fig.tight_layout()
    fig.savefig(RESULTS / "fig_activation.png", dpi=120)
    plt.close(fig)


def setting(row: dict | None) -> str:
    if row is None:
        return "none"
    parts = [row["method"]] + [f"{k}={row[k]:g}" for k in ("layer", "r", "s") if k in row and row[k] is not None]
    return " ".join(parts)


def markdown(summary: dict) -> str:
    """Per theme and experiment: best score per family and the comparison at equal coherence."""
    lines = []
    for theme, parts in summary.items():
        for kind, score in (("deactivation", "deactivation_score"), ("activation", "activation_score")):
            if kind not in parts:
                continue
            part = parts[kind]
            lines += [f"### {theme}: {kind}", "", "| | setting | score ± se | B | C |", "|---|---|---|---|---|"]
            rows = [("unsteered", part["unsteered"])] + [(f"best {k}", v) for k, v in part["best_score"].items()]
            rows += [
                (
                    f"{k} at C ≥ {level}·C0 = {level * part['unsteered_coherence']:.2f}",
                    part[f"coherence_at_least_{level}"][k],
                )
                for level in LEVELS
                for k in ("graph", "initial")
            ]
            for name, row in rows:
                if row is None:
                    lines.append(f"| {name} | none reaches it | | | |")
                    continue
                lines.append(
                    f"| {name} | {setting(row)} | {row[score]:.3f} ± {row.get(score + '_se', float('nan')):.3f} | "
                    f"{row['behaviour']:.3f} | {row['coherence']:.3f} |"
                )
            verdicts = [f"best score: graph {'>' if part['graph_beats_initial_on_score'] else '<='} initial"]
            for level in LEVELS:
                entry = part[f"coherence_at_least_{level}"]
                text = f"C ≥ {level}·C0: graph better = {entry['graph_better']}"
                if "behaviour_difference" in entry:
                    noise = "" if entry["beyond_2se"] else ", within 2 se"
                    text += f" (ΔB = {entry['behaviour_difference']:+.3f} ± {entry['difference_se']:.3f}{noise})"
                verdicts.append(text)
            lines += ["", "; ".join(verdicts), ""]
    return "\n".join(lines)


def main() -> None:
    summary: dict = {}
    deactivation_figures(load("deactivation"), summary)
    activation_figures(load("activation"), summary)
    text = markdown(summary)
    (RESULTS / "summary.md").write_text(text)
    print(text)
    print(save("summary.json", summary))


if __name__ == "__main__":
    main()
