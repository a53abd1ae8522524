"""How long the flow part of a demo takes on a real bank: the CLI commands end to end (fresh
processes), and `flowsteer.flow.pick_seed` with labels, by phase.

    python benchmarks/flow_demo.py --saes DIR [--feature 18/res/123] [--corpus-rows 32]

Writes ``benchmarks/results/flow_demo.json`` (the picked graph is rendered to a temporary folder,
for the timing only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from flowsteer.flow import pick_seed
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.paths import write_json
from flowsteer.saes import SAEBank

RESULTS = Path(__file__).resolve().parent / "results"


def timed_command(args: list[str]) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flowsteer.cli", "flow", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"flowsteer {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return {
        "command": "flowsteer flow " + " ".join(args),
        "seconds": time.perf_counter() - start,
        "stdout": done.stdout,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True)
    parser.add_argument("--feature", default="18/res/123", help="seed of the timed `flowsteer flow` command")
    parser.add_argument("--corpus-rows", type=int, default=32, help="rows of 128 tokens for pick_seed's labels")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out)
    result: dict = {"settings": vars(args), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        graph = timed_command(
            [args.feature, "--saes", args.saes, "--out", f"{tmp}/flow.png", "--out", f"{tmp}/flow.html"]
        )
        stats = timed_command(["--stats", "--saes", args.saes, "--out", f"{tmp}/stats"])
    result["cli"] = {"graph": graph, "stats": {k: v for k, v in stats.items() if k != "stdout"}}
    start = time.perf_counter()
    model = load_model(args.model)
    loaded = time.perf_counter()
    saes = SAEBank.load(args.saes)
    bank = time.perf_counter()
    choice = pick_seed(saes, model, candidates=args.candidates, corpus_rows=args.corpus_rows)
    picked = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        choice.save(Path(scratch) / "seed.png", Path(scratch) / "seed.html")
    rendered = time.perf_counter()
    result["pick_seed"] = {
        "seconds": {
            "model_load": loaded - start,
            "bank_load": bank - loaded,
            "pick_seed": picked - bank,
            "render_png_html": rendered - picked,
            "total": rendered - start,
        },
        "phases": choice.seconds,
        "label_corpus_tokens": choice.labels.meta["corpus_tokens"],
        "seed": str(choice.seed),
        "graph": repr(choice.flow),
        "candidates": choice.candidates,
    }
    write_json(out / "flow_demo.json", result)
    print(f"flowsteer flow {args.feature}: {graph['seconds']:.1f} s;  flowsteer flow --stats: {stats['seconds']:.1f} s")
    print(f"pick_seed with labels: {result['pick_seed']['seconds']}")
    print(f"picked {choice.seed}: {choice.flow}")
    for entry in choice.candidates[:5]:
        print(entry)
    return result


if __name__ == "__main__":
    main()
