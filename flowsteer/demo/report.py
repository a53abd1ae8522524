"""The demo's driver: runs the sections in order and assembles ``report.md``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transformer_lens import HookedTransformer

from flowsteer.paths import atomic_file


@dataclass
class DemoContext:
    """What sections share: the output folder, the model, and the report being written."""

    out: Path
    model: HookedTransformer
    lines: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def section(self, title: str) -> None:
        self.lines += ["", f"## {title}", ""]
        print(f"\n== {title}", flush=True)

    def write(self, *lines: str) -> None:
        self.lines.extend(lines)

    def say(self, message: str) -> None:
        """Progress for the person watching the terminal."""
        print(f"   {message}", flush=True)


Section = Callable[[DemoContext], None]


def run_demo(out: str | Path, model: HookedTransformer, sections: list[tuple[str, Section]]) -> Path:
    """Run ``sections`` on ``model`` and write ``out/report.md``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = DemoContext(out, model)
    context.write("# flowsteer demo report", "", f"Model: `{model.cfg.model_name}`, {model.cfg.n_layers} layers, "
                  f"d_model {model.cfg.d_model}, on {model.cfg.device}.")
    for name, section in sections:
        start = time.perf_counter()
        section(context)
        context.timings[name] = time.perf_counter() - start
    context.section("Timings")
    context.write("| section | seconds |", "|---|---|")
    context.write(*(f"| {name} | {seconds:.1f} |" for name, seconds in context.timings.items()))
    report = out / "report.md"
    with atomic_file(report) as handle:
        handle.write("\n".join(context.lines) + "\n")
    return report
