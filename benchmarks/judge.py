"""How long the reply judge takes on 60 replies (issue target: under a minute on 2 CPU cores).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/judge.py          # benchmarks/results/judge.json

60 (instruction, reply) pairs from the hand-labelled set (`data/judge/labelled.jsonl`, or the hand-written rows
when that file is absent), judged against SmolLM2-135M-Instruct with its shipped calibration: one NLL pass of each
reply under its own instruction and one under each of 4 other instructions. Repeated (protocol: interleaved, >= 3).
"""

from __future__ import annotations

import argparse
import json

import torch
from protocol import Result, add_arguments, interleave, save, stamp, table

from flowsteer import load_model
from flowsteer.evals import judge_replies
from flowsteer.evals.judge import default_calibration
from flowsteer.resources import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, "benchmarks/results/judge.json")
    parser.add_argument("--replies", type=int, default=60, help="replies judged per call (default 60)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = stamp("float32")
    model = load_model(device="cpu")
    calibration = default_calibration(model)
    folder = data_dir() / "judge"
    source = folder / "labelled.jsonl" if (folder / "labelled.jsonl").is_file() else folder / "adversarial.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    rows = (rows * (1 + args.replies // len(rows)))[: args.replies]
    instructions, replies = [r["instruction"] for r in rows], [r["reply"] for r in rows]

    def judge() -> Result:
        verdicts = judge_replies(instructions, replies, reference_model=model, calibration=calibration)
        return Result({"successes": sum(v.success for v in verdicts)})

    trials = interleave({f"judge_{args.replies}_replies": judge}, repeats=args.repeats, warmup=True)
    print(table(trials))
    save(args.out, {"replies": args.replies, "source": source.name, "model": model.cfg.model_name}, trials, started)


if __name__ == "__main__":
    main()
