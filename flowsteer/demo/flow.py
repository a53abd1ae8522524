"""Demo section: pick an interesting feature of the bank automatically and build, label and render its flow
graph (PNG in the report, the interactive HTML view and node-link JSON beside it)."""

from __future__ import annotations

from flowsteer.demo.report import DemoContext, escape
from flowsteer.flow import pick_seed


def run(context: DemoContext) -> None:
    settings = context.settings
    context.section("A feature's flow graph")
    if context.bank is None:
        raise RuntimeError("the flow section needs the SAE section's bank; run the SAE section first")
    context.say("ranking residual features by chain length and module matches, labelling the front-runners")
    corpus = None if settings.chunks is None else settings.chunks[: settings.label_rows]
    choice = pick_seed(context.bank, context.model, corpus, corpus_rows=settings.label_rows,
                       candidates=settings.seed_candidates)
    flow = context.flow = choice.flow
    paths = choice.save(context.out / "flow.png", context.out / "flow.html", context.out / "flow.json")
    context.say(f"seed {choice.seed}: {len(flow)} nodes, span {flow.span}; wrote {', '.join(p.name for p in paths)}")
    label, example = choice.labels(choice.seed) if choice.labels is not None else ("", "")
    context.write(
        f"Seed picked automatically among {len(choice.candidates)} candidates (longest residual chain, module "
        f"matches above chance, readable labels): **{choice.seed}**, label *{escape(label)}*"
        + (f", e.g. “{escape(example)}”." if example else "."),
        f"Its flow graph has {len(flow)} nodes over layers {flow.span[0]}-{flow.span[1]} "
        f"(residual chain cut at s^R < 0.5, module nodes at similarity ≥ 0.15):",
        "",
        "![flow graph](flow.png)",
        "",
        "Interactive view: [flow.html](flow.html) (works offline); node-link JSON: [flow.json](flow.json).",
        "",
        "| node | class | label |",
        "|---|---|---|",
    )
    for node, data in flow.graph.nodes(data=True):
        context.write(f"| {node} | {data.get('class', '')} | {escape(str(data.get('label', '')))} |")
