"""The layered flow-graph figure: a column per layer, rows for MLP / residual / attention.

Edges are drawn from predecessor to successor with width and colour by cosine similarity;
residual nodes are coloured by class, module nodes grey; the seed is ringed. Labels (top promoted
tokens) are written under each node when the graph has them. Uses matplotlib's object API
(`matplotlib.figure.Figure`), so it needs no pyplot state or display.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from flowsteer.paths import atomic_path

if TYPE_CHECKING:  # the graph imports this module when drawing; no import back at run time
    from flowsteer.flow.graph import FlowGraph

ROWS = {"mlp": 2.0, "res": 1.0, "pre": 1.0, "att": 0.0}
CLASS_COLOURS = {
    "translated": "#4C72B0",
    "processed": "#DD8452",
    "newborn": "#55A868",
    "unexplained": "#C44E52",
    "module": "#9A9A9A",
}
MARKERS = {"res": "o", "pre": "o", "mlp": "s", "att": "^"}


def layout(flow: FlowGraph, spread: float = 0.6) -> dict[str, tuple[float, float]]:
    """Node positions: x = layer, y = row of the kind; nodes sharing a cell are spread vertically."""
    cells: dict[tuple[int, float], list[str]] = defaultdict(list)
    for node, data in flow.graph.nodes(data=True):
        cells[(data["layer"], ROWS[data["kind"]])].append(node)
    positions = {}
    for (layer, row), nodes in cells.items():
        nodes.sort(key=lambda n: flow.graph.nodes[n]["index"])
        step = spread / max(len(nodes) - 1, 1)
        for i, node in enumerate(nodes):
            offset = 0.0 if len(nodes) == 1 else -spread / 2 + i * step
            positions[node] = (float(layer), row + offset)
    return positions


def similarity_norm(flow: FlowGraph) -> Normalize:
    low = min(flow.graph.graph.get("module_threshold", 0.0), flow.graph.graph.get("res_threshold", 0.0))
    return Normalize(vmin=low, vmax=1.0)


def draw(
    flow: FlowGraph, *, cmap: str = "viridis", label_chars: int = 20, show_labels: bool = True, title: str | None = None
) -> Figure:
    """The flow graph as a matplotlib `Figure`."""
    positions = layout(flow)
    layers = sorted({data["layer"] for _, data in flow.graph.nodes(data=True)})
    figure = Figure(figsize=(max(6.0, 1.15 * len(layers) + 2.5), 5.2), layout="constrained")
    ax = figure.add_subplot()
    colours, norm = colormaps[cmap], similarity_norm(flow)
    for u, v, data in sorted(flow.graph.edges(data=True), key=lambda e: e[2]["weight"]):
        weight = data["weight"]
        ax.annotate(
            "",
            xy=positions[v],
            xytext=positions[u],
            zorder=1,
            arrowprops=dict(
                arrowstyle="-|>",
                color=colours(norm(weight)),
                lw=0.6 + 3.4 * weight,
                shrinkA=7,
                shrinkB=7,
                mutation_scale=9,
            ),
        )
    for node, data in flow.graph.nodes(data=True):
        x, y = positions[node]
        ax.scatter(
            [x],
            [y],
            s=240 if data.get("seed") else 120,
            marker=MARKERS[data["kind"]],
            zorder=3,
            color=CLASS_COLOURS.get(data.get("class"), "#9A9A9A"),
            edgecolors="black" if data.get("seed") else "white",
            linewidths=2.0 if data.get("seed") else 0.8,
        )
        text = str(data["index"])
        if show_labels and data.get("label"):
            label = data["label"]
            text += "\n" + (label if len(label) <= label_chars else label[: label_chars - 1] + "…")
        ax.annotate(
            text, (x, y), xytext=(7, -7), textcoords="offset points", ha="left", va="top", fontsize=6.5, zorder=4
        )
    ax.set_xticks(layers, [("emb" if layer < 0 else str(layer)) for layer in layers])
    ax.set_yticks([0, 1, 2], ["att", "res", "mlp"])
    ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax.set_ylim(-0.7, 2.6)
    ax.set_xlabel("layer")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    mappable = figure.colorbar(_mappable(colours, norm), ax=ax, fraction=0.03, pad=0.01)
    mappable.set_label("cosine similarity")
    handles = [Line2D([], [], marker="o", ls="", color=c, label=name) for name, c in CLASS_COLOURS.items()]
    ax.legend(
        handles=handles, loc="upper left", fontsize=7, frameon=False, ncols=len(handles), bbox_to_anchor=(0, 1.08)
    )
    graph = flow.graph.graph
    if title is None and flow.seed is not None:
        start, end = flow.span
        title = (
            f"flow of {flow.seed}: span {start}-{end}, t^R = {graph.get('res_threshold')}, "
            f"module >= {graph.get('module_threshold')}"
        )
    if title:
        ax.set_title(title, fontsize=9, pad=24)
    return figure


def _mappable(colours, norm):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=colours)


def save_figure(flow: FlowGraph, path: str | Path, *, dpi: int = 160, **options) -> Path:
    """Draw and write the figure (format from the suffix: .png, .svg, .pdf ...), atomically."""
    path = Path(path)
    figure = draw(flow, **options)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    return path


def png_bytes(flow: FlowGraph, **options) -> bytes:
    buffer = io.BytesIO()
    draw(flow, **options).savefig(buffer, dpi=110, format="png")
    return buffer.getvalue()
