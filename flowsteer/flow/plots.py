"""Figures of the flow analyses: score distributions, class and group shares, the group transition
matrix, the deactivation table and the r sweep. Each function writes one file atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from flowsteer.flow.classes import CLASSES, PAPER_THRESHOLDS
from flowsteer.flow.groups import GROUPS
from flowsteer.flow.render import CLASS_COLOURS
from flowsteer.flow.stats import FlowStatistics
from flowsteer.paths import atomic_path
from flowsteer.sites import Site

SCORE_NAMES = {"res": "s^R (previous residual)", "mlp": "s^M (MLP)", "att": "s^A (attention)"}


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=150, format=path.suffix.lstrip(".") or "png")
    return path


def plot_scores(stats: FlowStatistics, path: str | Path) -> Path:
    """Box plots of s^R, s^M, s^A per layer with the chance level and the graph thresholds."""
    figure = Figure(figsize=(max(7.0, 0.35 * len(stats.sites) + 3), 8), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    for ax, key in zip(axes, SCORE_NAMES, strict=True):
        sites = [s for s in stats.sites if key in stats.scores[s].matches]
        if not sites:
            ax.set_visible(False)
            continue
        data = [stats.scores[s].score(key).float().numpy() for s in sites]
        layers = [s.layer for s in sites]
        ax.boxplot(data, positions=layers, widths=0.6, showfliers=False)
        ax.plot(layers, [stats.chance[s][key] for s in sites], "k:", lw=1, label="chance (99%)")
        threshold = PAPER_THRESHOLDS.res if key == "res" else PAPER_THRESHOLDS.module
        label = f"t^R = {threshold:g}" if key == "res" else f"module {threshold:g}"
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=label)
        ax.set_ylabel(SCORE_NAMES[key])
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1].set_xlabel("layer")
    return _save(figure, path)


def plot_class_shares(stats: FlowStatistics, path: str | Path) -> Path:
    """Stacked class shares per layer, one panel per threshold rule."""
    rules = list(stats.rules)
    figure = Figure(figsize=(max(7.0, 0.3 * len(stats.sites) + 3), 2.6 * len(rules)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(len(rules), 1, sharex=True))
    layers = [s.layer for s in stats.sites]
    for ax, rule in zip(axes, rules, strict=True):
        bottom = np.zeros(len(layers))
        for i, name in enumerate(CLASSES):
            share = np.array([float((stats.classes[rule][s] == i).float().mean()) for s in stats.sites])
            ax.bar(layers, share, bottom=bottom, color=CLASS_COLOURS[name], label=name, width=0.8)
            bottom += share
        ax.set_ylabel(f"share ({rule})")
        ax.set_ylim(0, 1)
        ax.set_xticks(layers)
    axes[0].legend(fontsize=7, ncols=4, loc="lower left", bbox_to_anchor=(0, 1.0))
    axes[-1].set_xlabel("layer")
    return _save(figure, path)


def plot_group_shares(shares: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Stacked shares of the eight data-driven groups per layer."""
    sites = sorted(shares, key=lambda s: Site.parse(s).order)
    layers = [Site.parse(s).layer for s in sites]
    colours = colormaps["tab10"]
    figure = Figure(figsize=(max(7.0, 0.3 * len(sites) + 3), 4), layout="constrained")
    ax = figure.add_subplot()
    bottom = np.zeros(len(sites))
    for i, group in enumerate(GROUPS):
        share = np.array([shares[s][group] for s in sites])
        ax.bar(layers, share, bottom=bottom, color=colours(i), label=group, width=0.8)
        bottom += share
    ax.set_ylim(0, 1)
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of active features")
    ax.legend(fontsize=7, ncols=4, loc="lower left", bbox_to_anchor=(0, 1.0))
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, path)


def plot_transition(matrix: np.ndarray, path: str | Path) -> Path:
    """The group transition matrix (the paper's Fig. 13) as an annotated heat map."""
    figure = Figure(figsize=(8, 6.5), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(np.nan_to_num(matrix, nan=0.0), cmap="Blues", vmin=0, vmax=1)
    short = [g.replace("From ", "") for g in GROUPS]
    ax.set_xticks(range(len(GROUPS)), short, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(GROUPS)), short, fontsize=8)
    for i in range(len(GROUPS)):
        for j in range(len(GROUPS)):
            value = matrix[i, j]
            ax.text(
                j,
                i,
                "-" if np.isnan(value) else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.6 else "black",
            )
    ax.set_xlabel("also seen in group B")
    ax.set_ylabel("feature seen in group A")
    figure.colorbar(image, ax=ax, fraction=0.04)
    return _save(figure, path)


def _value(cell) -> tuple[float, float, float]:
    """(value, low, high) of an `Estimate` dict (a bare number has a zero-width interval)."""
    if isinstance(cell, Mapping):
        return cell["value"], cell["low"], cell["high"]
    return float(cell), float(cell), float(cell)


def plot_deactivation(summary: Mapping[str, Mapping], paper: Mapping[str, Mapping], path: str | Path) -> Path:
    """Success rate and mean activation change per strategy with 95% intervals, one bar group per target set
    (every strategy of a set on the same targets; n in the legend), the paper's Table 1 as reference lines."""
    sets = [name for name in ("all_targets", "common_targets", "searched_targets") if summary.get(name)]
    strategies = list(dict.fromkeys(s for name in sets for s in summary[name]))
    figure = Figure(figsize=(10, 4.4), layout="constrained")
    axes = figure.subplots(1, 2)
    width = 0.8 / max(len(sets), 1)
    for ax, metric, name in (
        (axes[0], "success_rate", "success rate (activation 0 after the edit)"),
        (axes[1], "mean_activation_change", "mean activation change (1 - z_new/z_old)"),
    ):
        for j, target_set in enumerate(sets):
            table = summary[target_set]
            xs = [i + (j - (len(sets) - 1) / 2) * width for i, s in enumerate(strategies) if s in table]
            cells = [_value(table[s][metric]) for s in strategies if s in table]
            values = np.array([c[0] for c in cells])
            errors = np.array([[c[0] - c[1] for c in cells], [c[2] - c[0] for c in cells]])
            n = next(iter(table.values()))["n"]
            ax.bar(xs, values, width, yerr=errors, capsize=2, color=f"C{j}",
                   label=f"{target_set.replace('_', ' ')} (n = {n})")
        ax.set_xticks(range(len(strategies)), strategies, rotation=20, fontsize=8)
        for i, (label, row) in enumerate(paper.items()):
            ax.axhline(row[metric], ls="--", lw=1, color=f"C{i + 4}", label=f"paper: {label}")
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=7)
    return _save(figure, path)


def plot_sweep(sweep: Mapping[str, Mapping], path: str | Path) -> Path:
    """Activation change, share deactivated and relative loss change against r (all targets with 95% intervals,
    and per top-1 group)."""
    rs = sorted(sweep, key=float)
    x = [float(r) for r in rs]
    figure = Figure(figsize=(10, 3.4), layout="constrained")
    axes = figure.subplots(1, 3)
    for ax, metric in zip(axes, ("activation_change", "deactivated", "relative_loss_change"), strict=True):
        cells = np.array([_value(sweep[r][metric]) for r in rs])
        ax.plot(x, cells[:, 0], "o-", label="all")
        ax.fill_between(x, cells[:, 1], cells[:, 2], alpha=0.25, label="95% interval")
        groups = sorted({g for r in rs for g in sweep[r]["per_group"]}, key=GROUPS.index)
        for group in groups:
            ys = [_value(sweep[r]["per_group"][group][metric])[0] if group in sweep[r]["per_group"] else np.nan
                  for r in rs]
            ax.plot(x, ys, ".--", lw=0.8, label=group)
        ax.set_xlabel("r")
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.axvline(1.0, color="grey", lw=0.6)
    axes[0].legend(fontsize=6)
    return _save(figure, path)
