"""The reply judge against hand labels: precision and recall of each flag, and the rows it gets wrong.

    python analyses/judge_agreement.py      # analyses/results/judge_agreement.json and .md

The labelled set is ``data/judge/adversarial.jsonl`` (hand-written bad and good replies of every kind) plus
``data/judge/labelled_real.jsonl`` (real replies of the base model, the refusal organism and every bypass method),
each labelled by hand as ``refused``, ``answered`` (a coherent, on-topic answer) or ``neither``. The judge runs with
the embedded model as its reference and its shipped calibration. Flags compared: ``refused`` against the label
``refused``, ``success`` against the label ``answered``; intervals are Wilson 95%.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import torch

from flowsteer import load_model
from flowsteer.evals import judge_replies
from flowsteer.evals.intervals import rate
from flowsteer.evals.judge import default_calibration
from flowsteer.models import DEFAULT_MODEL
from flowsteer.paths import atomic_path, write_json
from flowsteer.refusal.prompts import calibration_instructions
from flowsteer.resources import data_dir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analyses" / "results"
START, END = "<!-- judge_agreement:start -->", "<!-- judge_agreement:end -->"
FILES = ("adversarial.jsonl", "labelled_real.jsonl")
FLAGS = {"refused": "refused", "success": "answered"}  # flag -> the label it should find


def labelled_rows() -> list[dict]:
    rows = []
    for name in FILES:
        lines = (data_dir() / "judge" / name).read_text().splitlines()
        rows += [json.loads(line) | {"file": name} for line in lines if line.strip()]
    return rows


def agreement(rows: list[dict], flags: list[dict]) -> dict:
    """Precision and recall of each flag against its label, with Wilson intervals."""
    result = {}
    for flag, label in FLAGS.items():
        predicted = [f[flag] for f in flags]
        actual = [row["label"] == label for row in rows]
        hits = [p for p, a in zip(predicted, actual, strict=True) if a]
        called = [a for p, a in zip(predicted, actual, strict=True) if p]
        result[flag] = {"label": label, "precision": rate(called).to_dict() if called else None,
                        "recall": rate(hits).to_dict() if hits else None,
                        "accuracy": rate([p == a for p, a in zip(predicted, actual, strict=True)]).to_dict()}
    return result


def markdown(result: dict) -> str:
    def cell(e: dict | None) -> str:
        return "–" if e is None else f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}] (n={e['n']})"

    lines = ["| flag | against label | precision | recall | accuracy |", "|---|---|---|---|---|"]
    for flag, a in result["agreement"].items():
        cells = " | ".join(cell(a[key]) for key in ("precision", "recall", "accuracy"))
        lines.append(f"| {flag} | {a['label']} | {cells} |")
    lines += ["", "Wrong verdicts by kind of reply (label → what the judge said):", ""]
    for kind, count in result["errors_by_kind"].items():
        lines.append(f"- {kind}: {count}")
    lines += ["", "Every wrong verdict:", ""]
    for row in result["errors"]:
        lines.append(f"- `{row['id']}` ({row['kind']}, label {row['label']}): refused={row['refused']}, "
                     f"coherent={row['coherent']}, on_topic={row['on_topic']} (NLL {row['nll']:.2f}, repetition "
                     f"{row['repetition']:.2f}, PMI {row['pmi']:.3f}): {row['reply'][:90]!r}")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(2)
    model = load_model(DEFAULT_MODEL, device="cpu")
    calibration = default_calibration(model, calibration_instructions())
    rows = labelled_rows()
    start = time.perf_counter()
    verdicts = judge_replies([r["instruction"] for r in rows], [r["reply"] for r in rows], reference_model=model,
                             calibration=calibration)
    seconds = time.perf_counter() - start
    flags = [v.to_dict() for v in verdicts]
    errors = [row | flag for row, flag in zip(rows, flags, strict=True)
              if flag["refused"] != (row["label"] == "refused") or flag["success"] != (row["label"] == "answered")]
    result = {
        "analysis": "reply judge vs hand labels",
        "script": "analyses/judge_agreement.py",
        "reference_model": DEFAULT_MODEL,
        "calibration": {k: v for k, v in calibration.to_dict().items() if k != "pool"},
        "rows": len(rows),
        "labels": dict(Counter(r["label"] for r in rows)),
        "by_file": dict(Counter(r["file"] for r in rows)),
        "agreement": agreement(rows, flags),
        "errors_by_kind": dict(Counter(f"{e['kind']} ({e['label']} → refused={e['refused']}, "
                                       f"success={e['success']})" for e in errors)),
        "errors": [{k: e[k] for k in ("id", "kind", "label", "reply", "refused", "coherent", "on_topic", "success",
                                      "nll", "repetition", "pmi")} for e in errors],
        "judge_seconds": seconds,
    }
    write_json(RESULTS / "judge_agreement.json", result)
    with atomic_path(RESULTS / "judge_agreement.md") as tmp:
        Path(tmp).write_text(f"# Reply judge vs hand labels\n\n{len(rows)} labelled replies; from "
                             f"`analyses/judge_agreement.py`.\n\n{markdown(result)}\n")
    docs = ROOT / "docs" / "evaluation.md"
    text = docs.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with atomic_path(docs) as tmp:
        Path(tmp).write_text(f"{head}{START}\n{len(rows)} labelled replies ({result['labels']}); judged in "
                             f"{seconds:.0f} s on this machine.\n\n{markdown(result)}\n{END}{tail}")
    print(markdown(result))
    print(f"judged {len(rows)} replies in {seconds:.0f} s")


if __name__ == "__main__":
    main()
