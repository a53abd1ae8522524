"""Linear refusal baselines on the refusal organism (Arditi et al. 2024), on held-out prompts.

1. Difference-in-means directions from the train prompts at every post-instruction position and layer.
2. Arditi's selection over all of them on the val prompts: bypass (ablation at all layers), induce
   (ActAdd +r at the direction's layer), KL on harmless; filters KL > 0.1, induce < 0, layer >= 0.8 L.
3. On the test prompts: baseline, directional ablation and ActAdd (−r at the chosen layer) — refusal
   by substring judge and by log-odds, over-refusal of harmless prompts, KL on harmless prompts,
   cross-entropy on the held-out paragraphs, and intervention magnitude; ActAdd +r on harmless prompts
   (induced refusal).
4. A layer sweep of ActAdd −r (direction of the chosen position at each layer).

Writes ``OUT/linear_baselines.json`` (numbers), ``OUT/linear_baselines_replies.json`` (every reply),
``OUT/selected_direction.safetensors`` (the chosen r, unnormalised) and ``OUT/linear_baselines.png``.
Under the CPU lock (about an hour on 2 cores):

    flock /tmp/flowsteer-cpu.lock python analyses/refusal_baselines.py [--out results/refusal]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flowsteer import chat_prompts, load_model
from flowsteer.data.refusal import data_sha256, instructions, paragraphs
from flowsteer.evals import (
    cross_entropy,
    intervention_magnitude,
    last_position_logits,
    next_token_kl,
    refusal_log_odds,
    refusal_token_ids,
)
from flowsteer.evals.behaviour import refusal_behaviour
from flowsteer.linear import (
    NoDirectionSelected,
    ablation_patches,
    actadd_patches,
    diff_in_means,
    filter_by_refusal_score,
    score_directions,
    select_direction,
)
from flowsteer.models.organisms import REFUSAL_ORGANISM
from flowsteer.patching import EffectLog
from flowsteer.paths import cache_dir, write_json
from flowsteer.vectors import save_vector


def condition(model, patches, reference: torch.Tensor, harmful: list[str], harmless: list[str], args) -> dict:
    """Behaviour, KL, cross-entropy and magnitude of one set of patches on the test prompts."""
    behaviour = refusal_behaviour(model, patches, split="test", max_new_tokens=args.max_new_tokens)
    result = {label: {k: v for k, v in behaviour[label].items() if k != "replies"} for label in behaviour}
    result["replies"] = {label: behaviour[label]["replies"] for label in behaviour}
    steered = last_position_logits(model, harmless, patches)
    result["kl_harmless_last_position"] = float(next_token_kl(reference, steered).mean())
    result["paragraphs"] = cross_entropy(model, list(paragraphs()), patches)
    if patches:
        log = EffectLog()
        last_position_logits(model, harmful, patches, record=log)
        result["magnitude_harmful_prompts"] = intervention_magnitude(log, model.cfg.n_layers)
    return result


def layer_sweep(model, directions, position: int, harmful: list[str], harmless: list[str], reference, args) -> list[dict]:
    """ActAdd −r[position, ℓ] at each layer ℓ: log-odds bypass, KL, magnitude; substring bypass on
    every ``args.sweep_generate_every``-th layer."""
    ids = refusal_token_ids(model)
    rows = []
    for layer in directions.layers:
        direction = directions.direction(position, layer)
        if not bool(direction.norm() > 0):
            continue
        patches = actadd_patches(direction, layer, -1.0)
        log = EffectLog()
        scores = refusal_log_odds(last_position_logits(model, harmful, patches, record=log), ids)
        magnitude = intervention_magnitude(log, model.cfg.n_layers)
        row = {
            "layer": layer,
            "direction_norm": float(direction.norm()),
            "harmful_log_odds_mean": float(scores.mean()),
            "harmful_log_odds_refusal_rate": float((scores > 0).float().mean()),
            "kl_harmless_last_position": float(next_token_kl(reference, last_position_logits(model, harmless, patches)).mean()),
            "mean_delta_norm": magnitude["mean_delta_norm"],
            "mean_relative_delta": magnitude["mean_relative_delta"],
        }
        if layer % args.sweep_generate_every == 0:
            from flowsteer.evals.behaviour import judge_instructions
            from flowsteer.data.refusal import load_instructions

            judged = judge_instructions(
                model, load_instructions("harmful", "test"), patches, max_new_tokens=args.sweep_max_new_tokens
            )
            row["harmful_substring_refusal_rate"] = judged["refusal_rate"]
        rows.append(row)
        print(f"  sweep layer {layer:2d}: log-odds {row['harmful_log_odds_mean']:+.2f}, "
              f"substring {row.get('harmful_substring_refusal_rate', float('nan')):.2f}", flush=True)
    return rows


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = result["scores"]
    fig, axes = plt.subplots(1, 4, figsize=(20, 3.6))
    for ax, name in zip(axes[:3], ("bypass", "induce", "kl"), strict=True):
        values = torch.tensor(grid[name])
        image = ax.imshow(values, aspect="auto", cmap="viridis")
        ax.set_title(f"{name} score (val)")
        ax.set_xlabel("layer")
        ax.set_yticks(range(len(grid["positions"])), [str(p) for p in grid["positions"]])
        ax.set_ylabel("position")
        fig.colorbar(image, ax=ax)
    sweep = result["actadd_layer_sweep"]
    axes[3].plot([r["layer"] for r in sweep], [r["harmful_log_odds_mean"] for r in sweep], "o-", label="log-odds (mean)")
    generated = [r for r in sweep if "harmful_substring_refusal_rate" in r]
    twin = axes[3].twinx()
    twin.plot([r["layer"] for r in generated], [r["harmful_substring_refusal_rate"] for r in generated], "s--",
              color="C1", label="substring refusal rate")
    twin.set_ylim(0, 1.05)
    axes[3].set_title("ActAdd −r layer sweep (harmful test)")
    axes[3].set_xlabel("layer")
    axes[3].legend(loc="lower left")
    twin.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=REFUSAL_ORGANISM)
    parser.add_argument("--out", default="results/refusal")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="reply length judged (test conditions)")
    parser.add_argument("--sweep-generate-every", type=int, default=3, help="judge replies on every k-th sweep layer")
    parser.add_argument("--sweep-max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = load_model(args.model, device=args.device)
    n_layers = model.cfg.n_layers
    ids = refusal_token_ids(model)
    result: dict = {"model": args.model, "data_sha256": data_sha256(), "refusal_token_ids": ids,
                    "refusal_tokens": [model.tokenizer.decode([i]) for i in ids], "timing_seconds": {}}

    directions = diff_in_means(
        model, chat_prompts(model, instructions("harmful", "train")), chat_prompts(model, instructions("harmless", "train"))
    )
    directions.save(cache_dir("refusal") / f"diff_in_means-{args.model}-{result['data_sha256'][:12]}.safetensors")
    result["directions"] = {
        "positions": list(directions.positions),
        "position_tokens": [model.tokenizer.decode([t]) for t in model.to_tokens(chat_prompts(model, ["x"])[0])[0, directions.positions].tolist()],
        "n_harmful_train": len(instructions("harmful", "train")),
        "n_harmless_train": len(instructions("harmless", "train")),
        "norms": directions.directions.norm(dim=-1).tolist(),
    }
    result["timing_seconds"]["directions"] = time.perf_counter() - started

    harmful_val, harmless_val = filter_by_refusal_score(
        model, chat_prompts(model, instructions("harmful", "val")), chat_prompts(model, instructions("harmless", "val"))
    )
    result["selection_prompts"] = {"harmful_val_kept": len(harmful_val), "harmless_val_kept": len(harmless_val),
                                   "harmful_val": len(instructions("harmful", "val")),
                                   "harmless_val": len(instructions("harmless", "val"))}
    start = time.perf_counter()
    scores = score_directions(model, directions, harmful_val, harmless_val, progress=True)
    result["timing_seconds"]["scores"] = time.perf_counter() - start
    result["scores"] = scores.to_dict()
    try:
        selection = select_direction(scores, n_layers)
    except NoDirectionSelected as error:
        result["selection"] = {"error": str(error)}
        write_json(out / "linear_baselines.json", result)
        raise
    result["selection"] = selection.to_dict()
    direction = directions.direction(selection.position, selection.layer)
    save_vector(out / "selected_direction.safetensors", direction, model=args.model,
                position=str(selection.position), layer=str(selection.layer))
    result["selection"]["direction_norm"] = float(direction.norm())
    print(f"selected position {selection.position}, layer {selection.layer}: bypass {selection.bypass:.3f}, "
          f"induce {selection.induce:.3f}, kl {selection.kl:.4f}", flush=True)

    harmful_test = chat_prompts(model, instructions("harmful", "test"))
    harmless_test = chat_prompts(model, instructions("harmless", "test"))
    reference = last_position_logits(model, harmless_test)
    replies = {}
    conditions = {
        "baseline": [],
        "directional_ablation": ablation_patches(direction, n_layers),
        "actadd_minus": actadd_patches(direction, selection.layer, -1.0),
    }
    result["conditions"] = {}
    for name, patches in conditions.items():
        start = time.perf_counter()
        evaluated = condition(model, patches, reference, harmful_test, harmless_test, args)
        replies[name] = evaluated.pop("replies")
        evaluated["seconds"] = time.perf_counter() - start
        result["conditions"][name] = evaluated
        print(f"{name}: harmful refused {evaluated['harmful']['refusal_rate']:.2f} "
              f"(log-odds {evaluated['harmful']['log_odds_mean']:+.2f}), harmless refused "
              f"{evaluated['harmless']['refusal_rate']:.2f}, CE {evaluated['paragraphs']['cross_entropy']:.4f}", flush=True)
    from flowsteer.data.refusal import load_instructions
    from flowsteer.evals.behaviour import judge_instructions

    induced = judge_instructions(model, load_instructions("harmless", "test"),
                                 actadd_patches(direction, selection.layer, 1.0), max_new_tokens=args.max_new_tokens)
    replies["actadd_plus_harmless"] = induced.pop("replies")
    result["conditions"]["actadd_plus_on_harmless"] = induced

    start = time.perf_counter()
    result["actadd_layer_sweep"] = layer_sweep(model, directions, selection.position, harmful_test, harmless_test,
                                               reference, args)
    result["timing_seconds"]["layer_sweep"] = time.perf_counter() - start
    result["timing_seconds"]["total"] = time.perf_counter() - started
    write_json(out / "linear_baselines.json", result)
    write_json(out / "linear_baselines_replies.json", replies)
    plot(result, out / "linear_baselines.png")

    print("| condition | harmful refused (substring) | harmful log-odds>0 | mean log-odds | harmless refused | "
          "KL harmless | CE | mean ||Δh|| | ||Δh||/||h|| | locations changed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in conditions:
        c = result["conditions"][name]
        m = c.get("magnitude_harmful_prompts", {})
        print(f"| {name} | {c['harmful']['refusal_rate']:.2f} | {c['harmful']['log_odds_refusal_rate']:.2f} | "
              f"{c['harmful']['log_odds_mean']:+.2f} | {c['harmless']['refusal_rate']:.2f} | "
              f"{c['kl_harmless_last_position']:.4f} | {c['paragraphs']['cross_entropy']:.4f} | "
              f"{m.get('mean_delta_norm', 0):.3f} | {m.get('mean_relative_delta', 0):.4f} | {m.get('fraction_changed', 0):.3f} |")
    print(f"wrote {out / 'linear_baselines.json'} ({result['timing_seconds']['total']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
