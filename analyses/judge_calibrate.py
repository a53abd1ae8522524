"""Calibrate the reply judge for the embedded model and ship it: ``data/judge/smollm2-135m-instruct.json``.

    python analyses/judge_calibrate.py

The reference model (SmolLM2-135M-Instruct, unpatched) replies to the 288 harmless *training* instructions of the
refusal data, greedy and sampled (temperature 1, seed 0), 48 new tokens; `flowsteer.evals.JudgeCalibration.fit`
sets the NLL and repetition bounds at the 95th percentile of those replies and the on-topic bound at the 95th
percentile of the shuffled-instruction PMI. No validation or test prompt is used.
"""

from __future__ import annotations

import json
import time

import torch

from flowsteer import load_model
from flowsteer.evals.judge import SHIPPED, JudgeCalibration, calibration_replies
from flowsteer.models import DEFAULT_MODEL
from flowsteer.refusal.prompts import calibration_instructions
from flowsteer.resources import data_dir


def main() -> None:
    torch.set_num_threads(2)
    model = load_model(DEFAULT_MODEL, device="cpu")
    start = time.perf_counter()
    pairs = calibration_replies(model, calibration_instructions())
    generated = time.perf_counter() - start
    calibration = JudgeCalibration.fit(model, *pairs)
    path = data_dir() / SHIPPED / f"{DEFAULT_MODEL}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration.save(path)
    print(json.dumps({k: v for k, v in calibration.to_dict().items() if k != "pool"}, indent=1))
    print(f"replies {generated:.0f} s, fit {time.perf_counter() - start - generated:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
