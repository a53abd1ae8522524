"""A self-contained interactive HTML view of a flow graph: inline SVG, CSS and plain JavaScript.

Nothing is fetched (no CDN, fonts or images), so the file works offline and inside notebooks.
Hover a node for its scores, class, thresholds, label and top context; click it to highlight
everything upstream and downstream of it; click the background to reset.
"""

from __future__ import annotations

import hashlib
import html
import json
from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.colors import to_hex

from flowsteer.flow.render import CLASS_COLOURS, layout, similarity_norm

if TYPE_CHECKING:  # the graph imports this module when drawing; no import back at run time
    from flowsteer.flow.graph import FlowGraph

X_STEP, Y_STEP, MARGIN = 120, 150, 70

STYLE = """
.fs-flow{font-family:sans-serif;font-size:12px;position:relative}
.fs-flow svg{background:#fff}
.fs-flow .edge{opacity:.85}
.fs-flow .node{cursor:pointer;stroke:#fff;stroke-width:1.5}
.fs-flow .node.seed{stroke:#000;stroke-width:3}
.fs-flow .dim{opacity:.12}
.fs-flow .lbl{font-size:10px;fill:#333;pointer-events:none}
.fs-flow .axis{font-size:11px;fill:#666}
.fs-flow .tip{position:absolute;display:none;background:#fffff0;border:1px solid #999;padding:6px 8px;
 max-width:420px;white-space:pre-wrap;pointer-events:none;box-shadow:2px 2px 6px #0003}
"""

SCRIPT = """
(function(){
 var root=document.getElementById("%(id)s"), data=JSON.parse(root.querySelector("script.fs-data").textContent);
 var tip=root.querySelector(".tip"), up={}, down={};
 data.edges.forEach(function(e){(down[e[0]]=down[e[0]]||[]).push(e[1]);(up[e[1]]=up[e[1]]||[]).push(e[0]);});
 function reach(start,next){var seen={},todo=[start];seen[start]=1;while(todo.length){var n=todo.pop();
  (next[n]||[]).forEach(function(m){if(!seen[m]){seen[m]=1;todo.push(m);}});}return seen;}
 function reset(){root.querySelectorAll(".dim").forEach(function(el){el.classList.remove("dim");});}
 root.querySelectorAll(".node").forEach(function(el){
  var id=el.getAttribute("data-id");
  el.addEventListener("mousemove",function(ev){var r=root.getBoundingClientRect();tip.textContent=data.info[id];
   tip.style.display="block";tip.style.left=(ev.clientX-r.left+14)+"px";tip.style.top=(ev.clientY-r.top+14)+"px";});
  el.addEventListener("mouseleave",function(){tip.style.display="none";});
  el.addEventListener("click",function(ev){ev.stopPropagation();reset();var a=reach(id,up),b=reach(id,down);
   root.querySelectorAll("[data-id]").forEach(function(n){var k=n.getAttribute("data-id");
    if(!a[k]&&!b[k])n.classList.add("dim");});
   root.querySelectorAll(".edge").forEach(function(e){var s=e.getAttribute("data-s"),t=e.getAttribute("data-t");
    if(!((a[s]&&a[t])||(b[s]&&b[t])))e.classList.add("dim");});});
 });
 root.querySelector("svg").addEventListener("click",reset);
})();
"""


def _info(node: str, data: dict) -> str:
    lines = [node, f"class: {data.get('class', '')}"]
    for key in ("res", "mlp", "att"):
        if f"s_{key}" in data:
            threshold = data.get(f"t_{key}")
            extra = f" (threshold {threshold:.3f})" if threshold is not None else ""
            lines.append(f"s_{key} = {data[f's_{key}']:.3f}{extra}")
    if data.get("label"):
        lines.append(f"promotes: {data['label']}")
    if data.get("context"):
        lines.append(f"top context: {data['context']}")
    return "\n".join(lines)


def flow_html(flow: FlowGraph, *, fragment: bool = False, cmap: str = "viridis", label_chars: int = 18) -> str:
    """The graph as an HTML page (or, with ``fragment``, a ``<div>`` for notebooks)."""
    positions = layout(flow)
    layers = sorted({d["layer"] for _, d in flow.graph.nodes(data=True)})
    column = {layer: i for i, layer in enumerate(layers)}

    def px(node):
        x, y = positions[node]
        return MARGIN + column[int(x)] * X_STEP, MARGIN + (2.0 - y) * Y_STEP

    width, height = 2 * MARGIN + max(len(layers) - 1, 0) * X_STEP, 2 * MARGIN + 2 * Y_STEP + 30
    colours, norm = colormaps[cmap], similarity_norm(flow)
    body = json.dumps(flow.to_json(), sort_keys=True, default=str)
    uid = "fs-" + hashlib.blake2b(body.encode(), digest_size=5).hexdigest()
    parts = [
        f'<svg width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">',
        f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    for layer in layers:
        x = MARGIN + column[layer] * X_STEP
        parts.append(
            f'<text class="axis" x="{x}" y="{height - 12}" text-anchor="middle">{"emb" if layer < 0 else layer}</text>'
        )
    for row, name in ((2.0, "mlp"), (1.0, "res"), (0.0, "att")):
        parts.append(f'<text class="axis" x="8" y="{MARGIN + (2.0 - row) * Y_STEP + 4:.0f}">{name}</text>')
    for u, v, data in sorted(flow.graph.edges(data=True), key=lambda e: e[2]["weight"]):
        (x1, y1), (x2, y2) = px(u), px(v)
        colour = to_hex(colours(norm(data["weight"])))
        parts.append(
            f'<line class="edge" data-s="{html.escape(u)}" data-t="{html.escape(v)}" x1="{x1:.1f}" y1="{y1:.1f}" '
            f'x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="{1 + 5 * data["weight"]:.2f}" '
            f'marker-end="url(#{uid}-arrow)"><title>{data["weight"]:.3f}</title></line>'
        )
    for node, data in flow.graph.nodes(data=True):
        x, y = px(node)
        fill = CLASS_COLOURS.get(data.get("class"), "#9A9A9A")
        cls = "node seed" if data.get("seed") else "node"
        ident = html.escape(node)
        if data["kind"] in ("mlp", "att"):
            shape = (
                f'<rect class="{cls}" data-id="{ident}" x="{x - 9:.1f}" y="{y - 9:.1f}" width="18" height="18" '
                f'fill="{fill}"/>'
            )
        else:
            shape = f'<circle class="{cls}" data-id="{ident}" cx="{x:.1f}" cy="{y:.1f}" r="11" fill="{fill}"/>'
        parts.append(shape)
        label = data.get("label") or ""
        label = label if len(label) <= label_chars else label[: label_chars - 1] + "…"
        parts.append(
            f'<text class="lbl" data-id="{ident}" x="{x:.1f}" y="{y + 26:.1f}" text-anchor="middle">'
            f"{html.escape(str(data['index']))}</text>"
        )
        if label:
            parts.append(
                f'<text class="lbl" data-id="{ident}" x="{x:.1f}" y="{y + 39:.1f}" text-anchor="middle">'
                f"{html.escape(label)}</text>"
            )
    parts.append("</svg>")
    payload = {
        "edges": [[u, v, d["weight"]] for u, v, d in flow.graph.edges(data=True)],
        "info": {n: _info(n, d) for n, d in flow.graph.nodes(data=True)},
    }
    data_json = json.dumps(payload).replace("</", "<\\/")
    graph = flow.graph.graph
    heading = html.escape(
        f"flow of {graph.get('seed')}: {len(flow)} features, t^R = {graph.get('res_threshold')}, "
        f"module >= {graph.get('module_threshold')}"
    )
    legend = " ".join(f'<span style="color:{c}">&#9679;</span> {name}' for name, c in CLASS_COLOURS.items())
    div = (
        f'<div class="fs-flow" id="{uid}"><style>{STYLE}</style><div><b>{heading}</b></div><div>{legend}</div>'
        f'{"".join(parts)}<div class="tip"></div><script type="application/json" class="fs-data">{data_json}</script>'
        f"<script>{SCRIPT % {'id': uid}}</script></div>"
    )
    if fragment:
        return div
    title = html.escape(f"flowsteer flow graph {graph.get('seed', '')}")
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head><body>{div}</body></html>\n'
    )
