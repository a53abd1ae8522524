"""Smoke run of the non-linear interventions on the base SmolLM2 with a stand-in contrast.

Everything the refusal comparison needs, end to end, before the refusal organism exists. The
stand-in contrast: "Write a complaint about X." (base, plays "harmful") vs "Write a compliment
about X." (source, plays "harmless"), 32 topics split 20/6/6 into train/val/test pairs.

1. i-ResNet interchange intervention at ``--layer`` on the post-instruction tokens, a 16-coordinate
   latent mask, trained with the next-token KL to the source + the hinge loss on downstream
   mean-difference directions + the magnitude penalty; held-out KL before/after and against full
   replacement of the activation (`FromSource`).
2. Made usable without a source (`for_generation`: z* = mean latent of the source prompts) and
   applied during `generate_with_patches`, with ||Δh|| from an `EffectLog`.
3. INNSteer (coupling flow) on post-instruction activations of the two sets, α sweep in generation.
4. Save/load round trip of both interventions.
5. Round-trip precision on real activations: relative inverse error of each map on the prompts'
   activations, and the largest logit change of a δ = 0 shift on every token, in float64 (the
   default) and float32.

Run under the CPU lock: ``flock /tmp/flowsteer-cpu.lock python analyses/invertible_smoke.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from flowsteer import chat_prompts, load_model
from flowsteer.invertible import (
    CoordinateMask,
    HingeTerm,
    InterchangeObjective,
    InvertibleIntervention,
    TrainConfig,
    collect_activations,
    coupling_flow,
    data_init,
    for_generation,
    hinge_thresholds,
    innsteer_intervention,
    iresnet_map,
    kl_to_target,
    load_intervention,
    next_token_logprobs,
    save_intervention,
    train_innsteer,
    train_intervention,
)
from flowsteer.invertible.bijection import tensor_dtype
from flowsteer.invertible.maps import build_map
from flowsteer.patching import EffectLog, FromSource, Patch, generate_with_patches, interchange, run_with_patches
from flowsteer.paths import write_json
from flowsteer.sites import Site

ROOT = Path(__file__).resolve().parents[1]
TOPICS = [
    "the local bus service", "a new smartphone", "the town library", "a seaside hotel", "the school canteen",
    "a pizza restaurant", "the city park", "a football team", "an online shop", "the weather this summer",
    "a recent film", "the train station", "a coffee machine", "the neighbourhood gym", "a museum exhibition",
    "the post office", "a music festival", "the hospital staff", "a pair of running shoes", "the public pool",
    "a budget airline", "the village bakery", "a video game", "the office printer", "a cooking class",
    "the taxi driver", "a garden centre", "the new bridge", "a theatre show", "the internet provider",
    "a children's book", "the hair salon",
]
POST_INSTRUCTION = [-6, -5, -4, -3, -2, -1]  # <|im_end|> \n <|im_start|> ass istant \n


def held_out_kl(model, patch, base, source) -> float:
    target = next_token_logprobs(model, source)
    with torch.no_grad():
        logits = interchange(model, base, source, [patch])
    return float(kl_to_target(logits[:, -1], target).mean())


def generation_effect(model, prompts, patch, max_new_tokens) -> tuple[list[str], dict]:
    log = EffectLog()
    out = generate_with_patches(model, prompts, [patch], max_new_tokens=max_new_tokens, record=log)
    return out.texts, log.summary()


def round_trip_checks(model, prompts: list[str], site: Site) -> list[dict]:
    """Inverse error and δ = 0 logit change of each map kind, float64 and float32."""
    activations = collect_activations(model, prompts, site)
    with torch.no_grad():
        clean = run_with_patches(model, prompts)
    rows = []
    for name, dtype in [(n, t) for n in ("identity", "orthogonal", "iresnet", "coupling")
                        for t in (torch.float64, torch.float32)]:
        if name in ("identity", "orthogonal") and dtype == torch.float32:
            continue  # identity has no parameters; the rotation is always float64
        kwargs = {"dtype": dtype} if name in ("iresnet", "coupling") else {}
        torch.manual_seed(0)
        bijection = build_map(name, model.cfg.d_model, **kwargs)
        data_init(bijection, activations)
        if name == "coupling":  # fresh couplings are the identity: give them real scales and shifts
            with torch.no_grad():
                for layer in bijection.layers[1::2]:
                    layer.conditioner[-1].weight.normal_(0, 0.02)
        bijection.eval()
        x = activations.to(tensor_dtype(bijection, torch.float32))
        with torch.no_grad():
            back = bijection.inverse(bijection(x))
            intervention = InvertibleIntervention.shift(bijection, torch.zeros(model.cfg.d_model))
            patched = run_with_patches(model, prompts, [Patch(site, intervention, "all")])
        rows.append({
            "map": name,
            "dtype": str(tensor_dtype(bijection, torch.float32)),
            "rows": len(x),
            "max_relative_inverse_error": float(((back - x).norm(dim=-1) / x.norm(dim=-1)).max()),
            "max_abs_logit_change_delta_zero_all_tokens": float((patched - clean).abs().max()),
        })
        print(rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--hinge-layers", default="16,20", help="downstream layers of the hinge loss")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "analyses" / "results" / "invertible_smoke.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = load_model(args.model, device="cpu")
    site = Site(args.layer)
    base = chat_prompts(model, [f"Write a complaint about {topic}." for topic in TOPICS])
    source = chat_prompts(model, [f"Write a compliment about {topic}." for topic in TOPICS])
    train, val, test = slice(0, 20), slice(20, 26), slice(26, 32)
    results: dict = {"model": model.cfg.model_name, "site": str(site), "positions": POST_INSTRUCTION}

    # 1. i-ResNet interchange intervention, KL + hinge + magnitude
    downstream = [Site(int(layer)) for layer in args.hinge_layers.split(",")]
    directions = {
        s: collect_activations(model, base[train], s, POST_INSTRUCTION).mean(0)
        - collect_activations(model, source[train], s, POST_INSTRUCTION).mean(0)
        for s in downstream
    }
    thresholds = hinge_thresholds(model, source[train], directions, POST_INSTRUCTION)
    objective = InterchangeObjective(
        hinge=HingeTerm(directions, thresholds, margin=0.0, weight=0.1), magnitude_weight=0.1
    )
    d = model.cfg.d_model
    intervention = InvertibleIntervention.interchange(iresnet_map(d, n_blocks=2), CoordinateMask.first(d, 16))
    patch = Patch(site, intervention, POST_INSTRUCTION)
    config = TrainConfig(steps=args.steps, batch_size=4, lr=1e-3, eval_every=10, patience=3)
    kl_before = held_out_kl(model, patch, base[test], source[test])
    fit_start = time.perf_counter()
    history = train_intervention(
        model, patch, base[train], source[train], objective=objective, config=config,
        val_base=base[val], val_source=source[val],
    )
    fit_seconds = time.perf_counter() - fit_start
    kl_after = held_out_kl(model, patch, base[test], source[test])
    kl_full = held_out_kl(model, Patch(site, FromSource(), POST_INSTRUCTION), base[test], source[test])
    kl_none = held_out_kl(model, Patch(site, lambda a, c: a, POST_INSTRUCTION), base[test], source[test])
    usable = for_generation(model, patch, source[train])
    texts, effect = generation_effect(model, base[test], usable, args.max_new_tokens)
    plain = generate_with_patches(model, base[test], max_new_tokens=args.max_new_tokens).texts
    results["iresnet_interchange"] = {
        "map": intervention.bijection.config(),
        "mask_size": 16,
        "train_config": vars(config),
        "history": {
            "initial_val": history.initial_val, "best_val": history.best_val, "best_step": history.best_step,
            "stopped_early": history.stopped_early, "steps_run": len(history.train), "train": history.train,
        },
        "fit_seconds": fit_seconds,
        "lipschitz_bounds": [block.lipschitz_bound() for block in intervention.bijection.layers[1:]],
        "held_out_next_token_kl_to_source": {
            "unpatched": kl_none, "untrained_map": kl_before, "trained_map": kl_after, "full_replacement": kl_full,
        },
        "generation_fixed_target": {"effect": effect, "inverse_residual": usable.intervention.inverse_residual,
                                    "samples": list(zip(plain[:2], texts[:2], strict=True))},
    }
    print("i-ResNet:", {k: v for k, v in results["iresnet_interchange"].items() if k not in ("history", "map")})

    # 2. INNSteer coupling flow on post-instruction activations
    positive = collect_activations(model, source[train], site, POST_INSTRUCTION)
    negative = collect_activations(model, base[train], site, POST_INSTRUCTION)
    flow = coupling_flow(d, n_blocks=4, hidden=256)
    fit_start = time.perf_counter()
    inn = train_innsteer(flow, positive, negative, config=TrainConfig(steps=200, batch_size=32, weight_decay=1e-3,
                                                                       eval_every=20, patience=3))
    inn_seconds = time.perf_counter() - fit_start
    sweep = []
    for alpha in (0.5, 1.0, 2.0):
        steering = innsteer_intervention(flow, inn.delta, alpha)
        texts, effect = generation_effect(model, base[test], Patch(site, steering, slice(1, None)), args.max_new_tokens)
        sweep.append({"alpha": alpha, "effect": effect, "sample": texts[0]})
    results["innsteer_coupling"] = {
        "map": flow.config(),
        "rows": {"positive": len(positive), "negative": len(negative)},
        "initial_val": inn.history.initial_val, "best_val": inn.history.best_val,
        "val_accuracy": inn.val_accuracy, "delta_norm": float(inn.delta.norm()), "fit_seconds": inn_seconds,
        "alpha_sweep": sweep,
    }
    print("INNSteer:", {k: v for k, v in results["innsteer_coupling"].items() if k != "map"})

    results["round_trip"] = round_trip_checks(model, base[test] + source[test], site)

    # 3. Save/load round trip
    with tempfile.TemporaryDirectory() as folder:
        same = []
        for name, saved in (("iresnet", usable), ("innsteer", Patch(site, steering, slice(1, None)))):
            loaded = load_intervention(save_intervention(Path(folder) / name, saved, model), model)
            a = generate_with_patches(model, base[test][:2], [saved], max_new_tokens=8).tokens
            b = generate_with_patches(model, base[test][:2], [loaded], max_new_tokens=8).tokens
            same.append(a == b)
    results["save_load_same_generation"] = same
    results["seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print(f"wrote {args.out} in {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
