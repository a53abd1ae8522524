"""Linear refusal baselines on the refusal organism (Arditi et al. 2024), selected on val prompts and
evaluated on held-out test prompts. Run in stages, each one queued job (times: 2 CPU cores, uncontended):

    cpu-run python analyses/refusal_baselines.py select --positions -6 -5   # ~12 min
    cpu-run python analyses/refusal_baselines.py select --positions -4 -3   # ~12 min
    cpu-run python analyses/refusal_baselines.py select --positions -2 -1   # ~12 min
    cpu-run python analyses/refusal_baselines.py evaluate                   # ~10 min
    cpu-run python analyses/refusal_baselines.py sweep                      # ~6 min

1. ``select``: Arditi's prompt filter (harmful prompts the model refuses, harmless ones it does not, by
   refusal log-odds) on the train and the val prompts; difference-in-means directions r[i, l] from the
   kept train prompts at every post-instruction position i and layer l (cached); bypass, induce and KL
   scores of every candidate at the given positions and at layers l < int(0.8 L) (the paper's pruning of
   the last 20% of layers, applied before scoring since those candidates are discarded anyway).
2. ``evaluate``: Arditi's filters (KL > 0.1, induce < 0) over all scored candidates, the one with the
   lowest bypass score chosen; then on the test prompts: no intervention, directional ablation of r at
   every layer (resid_pre, attn_out, mlp_out), ActAdd −r at the chosen layer, and ActAdd +r on harmless
   prompts (induced refusal). Refusal by substring judge and log-odds, over-refusal, KL on harmless
   prompts, cross-entropy on the held-out paragraphs, mean ||Δh|| absolute and relative to ||h||, and the
   fraction of (layer, position) locations changed.
3. ``sweep``: ActAdd −r[i*, l] at every ``--every``-th layer l (log-odds bypass on harmful test prompts, KL, ||Δh||).

Everything goes into ``analyses/results/refusal_linear.json`` (each stage adds its keys); every reply into
``refusal_linear_replies.json``; the chosen r into ``refusal_linear_direction.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flowsteer import chat_prompts, load_model
from flowsteer.evals import cross_entropy, intervention_magnitude, last_position_logits, next_token_kl
from flowsteer.models import REFUSAL_ORGANISM, post_instruction_positions
from flowsteer.patching import EffectLog
from flowsteer.paths import cache_dir, write_json
from flowsteer.refusal import refusal_log_odds, refusal_token_ids
from flowsteer.refusal.behaviour import judge_instructions, refusal_behaviour
from flowsteer.refusal.organism.cache import organism_dir, read_manifest
from flowsteer.refusal.prompts import data_sha256, instructions, load_instructions, paragraphs
from flowsteer.refusal.selection import (
    DirectionScores,
    NoDirectionSelected,
    filter_by_refusal_score,
    score_directions,
    select_direction,
)
from flowsteer.steering.contrast import DiffInMeans, ablation_patches, actadd_patches, diff_in_means
from flowsteer.steering.vector_files import save_vector

RESULTS = Path(__file__).parent / "results"
OUT = RESULTS / "refusal_linear.json"
REPLIES = RESULTS / "refusal_linear_replies.json"
DIRECTION = RESULTS / "refusal_linear_direction.safetensors"
MODEL = REFUSAL_ORGANISM


def organism_id() -> str:
    """Identifies the model build the results belong to (the organism's build time and data hash)."""
    if MODEL != REFUSAL_ORGANISM:
        return MODEL
    manifest = read_manifest(organism_dir())
    return f"{manifest['created']}/{manifest['data_sha256'][:12]}"


def load_results() -> dict:
    """The results so far, or a fresh record when they belong to another organism build."""
    current = {"model": MODEL, "organism": organism_id(), "data_sha256": data_sha256()}
    if OUT.is_file():
        result = json.loads(OUT.read_text())
        if all(result.get(key) == value for key, value in current.items()):
            return result
    return current | {"timing_seconds": {}}


def directions_for(model, result: dict | None = None, prompt_filter: bool = True) -> DiffInMeans:
    """Difference-in-means at every post-instruction position and layer over the train prompts that pass
    Arditi's filter (harmful ones the model refuses, harmless ones it does not, by log-odds); cached."""
    path = cache_dir("refusal") / f"diff_in_means-{organism_id().replace('/', '-').replace(':', '')}.safetensors"
    if path.is_file():
        return DiffInMeans.load(path, d_model=model.cfg.d_model)
    harmful = chat_prompts(model, instructions("harmful", "train"))
    harmless = chat_prompts(model, instructions("harmless", "train"))
    kept_harmful, kept_harmless = harmful, harmless
    if prompt_filter:
        kept_harmful, kept_harmless = filter_by_refusal_score(model, harmful, harmless, batch_size=32)
    if result is not None:
        result["directions_prompts"] = {
            "harmful_train": len(harmful),
            "harmful_train_kept": len(kept_harmful),
            "harmless_train": len(harmless),
            "harmless_train_kept": len(kept_harmless),
        }
    directions = diff_in_means(model, kept_harmful, kept_harmless, positions=post_instruction_positions(model))
    directions.save(path)
    return directions


def select(model, result: dict, positions: list[int], prompt_filter: bool = True) -> None:
    start = time.perf_counter()
    directions = directions_for(model, result, prompt_filter)
    n_layers = model.cfg.n_layers
    result["directions"] = {
        "positions": list(directions.positions),
        "position_tokens": [
            model.tokenizer.decode([t])
            for t in model.to_tokens(chat_prompts(model, ["x"])[0])[0, list(directions.positions)].tolist()
        ],
        "norms": directions.directions.norm(dim=-1).tolist(),
    }
    harmful_val = chat_prompts(model, instructions("harmful", "val"))
    harmless_val = chat_prompts(model, instructions("harmless", "val"))
    if prompt_filter:
        harmful_val, harmless_val = filter_by_refusal_score(model, harmful_val, harmless_val)
    result["selection_prompts"] = {
        "harmful_val_kept": len(harmful_val),
        "harmless_val_kept": len(harmless_val),
        "harmful_val": len(instructions("harmful", "val")),
        "harmless_val": len(instructions("harmless", "val")),
    }
    layers = [layer for layer in directions.layers if layer < int(0.8 * n_layers)]
    scores = score_directions(
        model, directions.subset(positions, layers), harmful_val, harmless_val, batch_size=32, progress=True
    )
    result.setdefault("score_parts", {})[",".join(map(str, positions))] = scores.to_dict()
    result["timing_seconds"][f"select {positions}"] = time.perf_counter() - start


def condition(model, patches, reference: torch.Tensor, harmful: list[str], harmless: list[str]) -> dict:
    """Behaviour, KL, cross-entropy and magnitude of one set of patches on the test prompts."""
    behaviour = refusal_behaviour(model, patches, split="test")
    result = {label: {k: v for k, v in behaviour[label].items() if k != "replies"} for label in behaviour}
    result["replies"] = {label: behaviour[label]["replies"] for label in behaviour}
    steered = last_position_logits(model, harmless, patches, batch_size=32)
    result["kl_harmless_last_position"] = float(next_token_kl(reference, steered).mean())
    result["paragraphs"] = cross_entropy(model, list(paragraphs()), patches)
    if patches:
        for label, prompts in (("harmful", harmful), ("harmless", harmless)):
            log = EffectLog()
            last_position_logits(model, prompts, patches, record=log, batch_size=32)
            result[f"magnitude_{label}_prompts"] = intervention_magnitude(log, model.cfg.n_layers)
    return result


def chosen(model, result: dict, thresholds: dict):
    """Merge the score parts, apply Arditi's filters and return (selection, direction)."""
    positions = post_instruction_positions(model)
    parts = [DirectionScores.from_dict(part) for part in result.get("score_parts", {}).values()]
    scored = {p for part in parts for p in part.positions}
    if scored != set(positions):
        raise SystemExit(f"scores exist for positions {sorted(scored)}, need all of {positions}: run select first")
    scores = DirectionScores.concat(sorted(parts, key=lambda part: part.positions[0]))
    result["scores"] = scores.to_dict()
    try:
        selection = select_direction(scores, model.cfg.n_layers, **thresholds)
    except NoDirectionSelected as error:
        result["selection"] = {"error": str(error)}
        write_json(OUT, result)
        raise
    result["selection"] = selection.to_dict() | {"layers_scored": list(scores.layers)}
    direction = directions_for(model).direction(selection.position, selection.layer)
    result["selection"]["direction_norm"] = float(direction.norm())
    return selection, direction


def evaluate(model, result: dict, thresholds: dict) -> None:
    start = time.perf_counter()
    selection, direction = chosen(model, result, thresholds)
    save_vector(DIRECTION, direction, model=MODEL, position=selection.position, layer=selection.layer)
    print(f"selected position {selection.position}, layer {selection.layer}: {result['selection']}", flush=True)
    harmful = chat_prompts(model, instructions("harmful", "test"))
    harmless = chat_prompts(model, instructions("harmless", "test"))
    reference = last_position_logits(model, harmless, batch_size=32)
    conditions = {
        "baseline": [],
        "directional_ablation": ablation_patches(direction, model.cfg.n_layers),
        "actadd_minus": actadd_patches(direction, selection.layer, -1.0),
    }
    replies, result["conditions"] = {}, {}
    for name, patches in conditions.items():
        begin = time.perf_counter()
        evaluated = condition(model, patches, reference, harmful, harmless)
        replies[name] = evaluated.pop("replies")
        evaluated["seconds"] = time.perf_counter() - begin
        result["conditions"][name] = evaluated
        print(
            f"{name}: harmful refused {evaluated['harmful']['refusal_rate']:.2f} (log-odds>0 "
            f"{evaluated['harmful']['log_odds_refusal_rate']:.2f}), harmless refused "
            f"{evaluated['harmless']['refusal_rate']:.2f}, CE {evaluated['paragraphs']['cross_entropy']:.4f}",
            flush=True,
        )
    induced = judge_instructions(
        model, load_instructions("harmless", "test"), actadd_patches(direction, selection.layer, 1.0)
    )
    replies["actadd_plus_on_harmless"] = induced.pop("replies")
    result["conditions"]["actadd_plus_on_harmless"] = induced
    write_json(REPLIES, replies)
    result["timing_seconds"]["evaluate"] = time.perf_counter() - start
    print_table(result)


def sweep(model, result: dict, every: int) -> None:
    start = time.perf_counter()
    position = result["selection"]["position"]
    directions = directions_for(model)
    ids = refusal_token_ids(model)
    harmful = chat_prompts(model, instructions("harmful", "test"))
    harmless = chat_prompts(model, instructions("harmless", "test"))
    reference = last_position_logits(model, harmless, batch_size=32)
    rows = []
    for layer in directions.layers[::every]:
        direction = directions.direction(position, layer)
        if not bool(direction.norm() > 0):
            continue
        patches = actadd_patches(direction, layer, -1.0)
        log = EffectLog()
        scores = refusal_log_odds(last_position_logits(model, harmful, patches, record=log, batch_size=32), ids)
        magnitude = intervention_magnitude(log, model.cfg.n_layers)
        steered = last_position_logits(model, harmless, patches, batch_size=32)
        rows.append(
            {
                "layer": layer,
                "direction_norm": float(direction.norm()),
                "harmful_log_odds_mean": float(scores.mean()),
                "harmful_log_odds_refusal_rate": float((scores > 0).float().mean()),
                "kl_harmless_last_position": float(next_token_kl(reference, steered).mean()),
                "mean_delta_norm": magnitude["mean_delta_norm"],
                "mean_relative_delta": magnitude["mean_relative_delta"],
            }
        )
        print(f"  layer {layer:2d}: log-odds>0 {rows[-1]['harmful_log_odds_refusal_rate']:.2f}", flush=True)
    result["actadd_layer_sweep"] = {"position": position, "rows": rows}
    result["timing_seconds"]["sweep"] = time.perf_counter() - start


def print_table(result: dict) -> None:
    print(
        "| condition | harmful refused (substring) | harmful log-odds>0 | mean log-odds | harmless refused | "
        "KL harmless | CE | mean ||Δh|| | ||Δh||/||h|| | locations changed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("baseline", "directional_ablation", "actadd_minus"):
        c = result["conditions"][name]
        m = c.get("magnitude_harmful_prompts", {})
        print(
            f"| {name} | {c['harmful']['refusal_rate']:.2f} | {c['harmful']['log_odds_refusal_rate']:.2f} | "
            f"{c['harmful']['log_odds_mean']:+.2f} | {c['harmless']['refusal_rate']:.2f} | "
            f"{c['kl_harmless_last_position']:.4f} | {c['paragraphs']['cross_entropy']:.4f} | "
            f"{m.get('mean_delta_norm', 0):.3f} | {m.get('mean_relative_delta', 0):.4f} | "
            f"{m.get('fraction_changed', 0):.3f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("select", "evaluate", "sweep"))
    parser.add_argument("--positions", type=int, nargs="+", help="select: post-instruction positions to score")
    parser.add_argument(
        "--no-prompt-filter",
        action="store_true",
        help="select: score on all val prompts (for models that never refuse)",
    )
    parser.add_argument("--kl-threshold", type=float, default=0.1, help="evaluate: Arditi's KL filter (0.1)")
    parser.add_argument("--induce-threshold", type=float, default=0.0, help="evaluate: Arditi's induce filter (0)")
    parser.add_argument("--every", type=int, default=2, help="sweep: every k-th layer (default 2)")
    parser.add_argument("--model", default=REFUSAL_ORGANISM, help=f"default {REFUSAL_ORGANISM}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default analyses/results)")
    args = parser.parse_args(argv)
    global MODEL, OUT, REPLIES, DIRECTION
    MODEL = args.model
    OUT, REPLIES = args.out / OUT.name, args.out / REPLIES.name
    DIRECTION = args.out / DIRECTION.name
    torch.set_num_threads(2)
    model = load_model(MODEL, device="cpu")
    result = load_results()
    result["refusal_token_ids"] = refusal_token_ids(model)
    if args.stage == "select":
        select(model, result, args.positions or post_instruction_positions(model), not args.no_prompt_filter)
    elif args.stage == "evaluate":
        evaluate(model, result, {"kl_threshold": args.kl_threshold, "induce_threshold": args.induce_threshold})
    else:
        sweep(model, result, args.every)
    write_json(OUT, result)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
