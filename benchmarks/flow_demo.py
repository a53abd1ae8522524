"""How long the flow part of a demo takes on a real bank: the CLI commands end to end (fresh
processes), and `flowsteer.flow.pick_seed` with labels, by phase.

    python benchmarks/flow_demo.py --saes DIR [--feature 18/res/123] [--corpus-rows 32]
    python benchmarks/flow_demo.py --saes DIR --corpus-rows 2 --candidates 2 --repeats 1 --out /tmp/f.json  # smoke

The three measurements (the graph command, the stats command, `pick_seed` from model load to render)
run interleaved, ``--repeats`` times (`protocol.interleave`); min, median and raw values are kept.
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
from protocol import Result, add_arguments, interleave, save, stamp

from flowsteer.flow import pick_seed
from flowsteer.models import DEFAULT_MODEL, load_model
from flowsteer.saes import SAEBank

RESULTS = Path(__file__).resolve().parent / "results" / "flow_demo.json"


def command(args: list[str]):
    """A contender: ``flowsteer flow ARGS`` in a fresh process (its wall time, start-up included)."""

    def call() -> Result:
        done = subprocess.run([sys.executable, "-m", "flowsteer.cli", "flow", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"flowsteer flow {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return Result(output=done.stdout)

    return call


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saes", required=True)
    parser.add_argument("--feature", default="18/res/123", help="seed of the timed `flowsteer flow` command")
    parser.add_argument("--corpus-rows", type=int, default=32, help="rows of 128 tokens for pick_seed's labels")
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    add_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    started = stamp("float32", [])
    result: dict = {"settings": vars(args)}

    def pick() -> Result:
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
        seconds = {"model_load": loaded - start, "bank_load": bank - loaded, "pick_seed": picked - bank,
                   "render_png_html": rendered - picked}
        return Result(seconds, choice)

    with tempfile.TemporaryDirectory() as tmp:
        graph_args = [args.feature, "--saes", args.saes, "--out", f"{tmp}/flow.png", "--out", f"{tmp}/flow.html"]
        stats_args = ["--stats", "--saes", args.saes, "--out", f"{tmp}/stats"]
        trials = interleave({"cli_graph": command(graph_args), "cli_stats": command(stats_args), "pick_seed": pick},
                            args.repeats)
    graph = {"command": "flowsteer flow " + " ".join(graph_args), "seconds": trials.min("cli_graph"),
             "stdout": trials.outputs["cli_graph"]}
    stats = {"command": "flowsteer flow " + " ".join(stats_args), "seconds": trials.min("cli_stats")}
    result["cli"] = {"graph": graph, "stats": stats}
    choice = trials.outputs["pick_seed"]
    phases = ("model_load", "bank_load", "pick_seed", "render_png_html")
    result["pick_seed"] = {
        "seconds": {**{phase: trials.min("pick_seed", phase) for phase in phases}, "total": trials.min("pick_seed")},
        "seconds_median": {**{p: trials.median("pick_seed", p) for p in phases}, "total": trials.median("pick_seed")},
        "phases": choice.seconds,
        "label_corpus_tokens": choice.labels.meta["corpus_tokens"],
        "seed": str(choice.seed),
        "graph": repr(choice.flow),
        "candidates": choice.candidates,
    }
    save(args.out, result, trials, started)
    print(f"flowsteer flow {args.feature}: {graph['seconds']:.1f} s;  flowsteer flow --stats: {stats['seconds']:.1f} s")
    print(f"pick_seed with labels: {result['pick_seed']['seconds']}")
    print(f"picked {choice.seed}: {choice.flow}")
    for entry in choice.candidates[:5]:
        print(entry)
    return result


if __name__ == "__main__":
    main()
