"""The demo's driver: runs the sections in order and assembles ``report.md``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from flowsteer.models.precision import resolve_precision
from flowsteer.paths import atomic_file, write_json


@dataclass
class DemoSettings:
    """Sizes of the demo's work. The defaults fit the 15-minute budget on 2 CPU cores (a fresh `make demo`: 819 s,
    install included); `quick` is for tests on the tiny model.

    Attributes:
        bank_layers, bank_kinds: the band of SAEs trained (or reused from the cache).
        bank_tokens: distinct tokens harvested per SAE (each trained on `DEFAULT_CONFIG.passes` times).
        sae_width, sae_k: TopK SAE latents and active latents.
        chunks: token chunks to train on (default: the corpus); tests pass random tokens.
        eval_tokens: held-out activations per site for the bank's metrics.
        label_rows, seed_candidates: corpus rows (of 128 tokens) that label features; seeds given a graph.
        steering_samples, steering_tokens: generations per setting and their length in the steering section.
        refusal_model: the model that refuses (built on first use); refusal_options go to
            `flowsteer.refusal.bypass.quick_refusal_comparison` (its layer defaults to 40% of the depth).
    """

    bank_layers: tuple[int, ...] = (8, 9, 10, 11, 12)
    bank_kinds: tuple[str, ...] = ("res", "mlp", "att")
    bank_tokens: int = 100_000
    sae_width: int = 2304
    sae_k: int = 32
    chunks: Any = None
    eval_tokens: int = 8_192
    label_rows: int = 32
    seed_candidates: int = 12
    steering_samples: int = 3
    steering_tokens: int = 32
    refusal_model: str = "smollm2-135m-refusal"
    refusal_options: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, chunks: Any) -> DemoSettings:
        return cls(bank_layers=(1, 2, 3), bank_tokens=4096, sae_width=96, sae_k=6, chunks=chunks, eval_tokens=512,
                   label_rows=8, seed_candidates=4, steering_samples=1, steering_tokens=4,
                   refusal_model="tiny-random-llama",
                   refusal_options=dict(n_train=4, n_val=2, n_test=2, steps=1))


@dataclass
class DemoContext:
    """What sections share: the output folder, the model, the settings, the report being written and the
    objects one section makes for the next (the SAE bank, the flow graph)."""

    out: Path
    model: HookedTransformer
    settings: DemoSettings = field(default_factory=DemoSettings)
    lines: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    bank: Any = None
    flow: Any = None
    progress: bool = True  # tqdm bars on the long steps

    def section(self, title: str) -> None:
        self.lines += ["", f"## {title}", ""]
        print(f"\n== {title}", flush=True)

    def write(self, *lines: str) -> None:
        self.lines.extend(lines)

    def say(self, message: str) -> None:
        """Progress for the person watching the terminal."""
        print(f"   {message}", flush=True)


Section = Callable[[DemoContext], None]


def run_demo(
    out: str | Path,
    model: HookedTransformer,
    sections: list[tuple[str, Section]],
    settings: DemoSettings | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Run ``sections`` on ``model`` and write ``out/report.md`` (tqdm bars on long steps unless ``progress=False``);
    returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    context = DemoContext(out, model, settings or DemoSettings(), progress=progress)
    precision = resolve_precision("auto", model.cfg.device)
    context.say(f"compute precision: {precision.name} ({precision.source}: {precision.reason})")
    context.write("# flowsteer demo report", "", f"Model: `{model.cfg.model_name}`, {model.cfg.n_layers} layers, "
                  f"d_model {model.cfg.d_model}, on {model.cfg.device}. Bulk compute (SAE harvest and training, the "
                  f"organism's fine-tune when it is trained) in **{precision.name}** ({precision.source}: "
                  f"{precision.reason}; `FLOWSTEER_DTYPE` overrides).")
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
    write_json(out / "timings.json", {"precision": precision.name, "precision_source": precision.source,
                                      "sections_seconds": context.timings})
    return report


def escape(text: str) -> str:
    """Text safe inside a Markdown table cell or sentence."""
    return text.replace("|", "\\|").replace("\n", " ").replace("*", "\\*")
