"""INNSteer vs mean-difference ActAdd on the sentiment of continuations, at matched ||Δh||.

Steps (all on the embedded SmolLM2-135M-Instruct, CPU, seeded, greedy decoding):

1. Scorers, validated on held-out labelled sentences (data/sentiment/scorer_test): a logistic probe
   on the unsteered model's mean-pooled activations (layer chosen by 5-fold cross-validation on
   data/sentiment/scorer_train) and a word-list score (data/sentiment/lexicon.json).
2. Steering data: the 70 + 70 sentences of data/sentiment/steer as assistant replies to one fixed
   instruction; activations at ``--layer`` on the reply tokens.
3. INNSteer: an affine-coupling flow fitted with the class-Gaussian NLL + separation loss;
   ``h' = f⁻¹(f(h) + α·v)``, ``v = mean f(pos) - mean f(neg)``. ActAdd: ``h + c·(mean pos - mean neg)``.
4. For each α: generate from the neutral prompts of data/sentiment/prompts.txt with INNSteer on the
   generated tokens, measure its mean ||Δh|| with an EffectLog, then run ActAdd with the ``c`` of the
   same mean ||Δh||. Score sentiment (probe P(positive), word-list score) and fluency (perplexity
   under the unsteered model, 3-gram repetition rate).

Writes a JSON of every number and a figure. Run it under the CPU lock:
``flock /tmp/flowsteer-cpu.lock python analyses/innsteer_sentiment.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from flowsteer import chat_prompt, chat_prompts, load_model
from flowsteer.evals import continuation_perplexity, repetition_rate
from flowsteer.evals.sentiment import ActivationProbe, Lexicon, mean_pooled, probe_accuracy
from flowsteer.invertible import TrainConfig, collect_activations, coupling_flow, innsteer_intervention, train_innsteer
from flowsteer.patching import AddVector, EffectLog, Patch, TokenBatch, generate_with_patches
from flowsteer.patching.inputs import left_pad, tokenize
from flowsteer.paths import atomic_path, write_json
from flowsteer.sites import Site

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "sentiment"
REPLY_INSTRUCTION = "Tell me about your day."


def read(name: str) -> list[str]:
    return [line.strip() for line in (DATA / name).read_text().splitlines() if line.strip()]


def validate_scorers(model, probe_layers: list[int]) -> tuple[ActivationProbe, Lexicon, dict]:
    train = read("scorer_train/positive.txt") + read("scorer_train/negative.txt")
    y_train = torch.tensor([1] * len(read("scorer_train/positive.txt")) + [0] * len(read("scorer_train/negative.txt")))
    test = read("scorer_test/positive.txt") + read("scorer_test/negative.txt")
    y_test = torch.tensor([1] * len(read("scorer_test/positive.txt")) + [0] * len(read("scorer_test/negative.txt")))
    sites = [Site(layer) for layer in probe_layers]
    train_features, test_features = mean_pooled(model, train, sites), mean_pooled(model, test, sites)
    cv = {str(site): probe_accuracy(train_features[site], y_train) for site in sites}
    best = max(sites, key=lambda site: (cv[str(site)], -site.layer))
    probe = ActivationProbe.fit(best, train_features[best], y_train)
    probe_test = probe.probabilities(test_features[best])
    lexicon = Lexicon.load(DATA / "lexicon.json")
    lexicon_test = torch.tensor(lexicon.scores(test))
    covered = lexicon_test != 0
    lexicon_correct = (lexicon_test[covered] > 0).long() == y_test[covered]
    report = {
        "train_texts": len(train),
        "test_texts": len(test),
        "probe_cv_accuracy_by_site": cv,
        "probe_site": str(best),
        "probe_test_accuracy": float(((probe_test > 0.5).long() == y_test).float().mean()),
        "probe_test_mean_p_positive": {
            "positive_texts": float(probe_test[y_test == 1].mean()),
            "negative_texts": float(probe_test[y_test == 0].mean()),
        },
        "lexicon_test_coverage": float(covered.float().mean()),
        "lexicon_test_accuracy_on_covered": float(lexicon_correct.float().mean()),
        "lexicon_test_mean_score": {
            "positive_texts": float(lexicon_test[y_test == 1].mean()),
            "negative_texts": float(lexicon_test[y_test == 0].mean()),
        },
    }
    return probe, lexicon, report


def replies(model, texts: list[str]) -> tuple[TokenBatch, int]:
    """The texts as assistant replies to one instruction (token ids joined exactly), and the reply start."""
    prefix = tokenize(model, [chat_prompt(model, REPLY_INSTRUCTION)])[0]
    rows = [torch.cat([prefix, torch.tensor(model.tokenizer.encode(text), dtype=prefix.dtype)]) for text in texts]
    return left_pad(rows, model.tokenizer.pad_token_id), len(prefix)


def evaluate(model, prompts, generation, probe, lexicon) -> dict:
    probe_scores = probe.score(model, generation.texts)
    lexicon_scores = lexicon.scores(generation.texts)
    fluency = continuation_perplexity(model, prompts, generation.tokens)
    return {
        "p_positive": sum(probe_scores) / len(probe_scores),
        "lexicon_score": sum(lexicon_scores) / len(lexicon_scores),
        "perplexity": fluency["perplexity"],
        "median_perplexity": fluency["median_perplexity"],
        "repetition_rate": repetition_rate(generation.texts),
        "mean_tokens": sum(len(t) for t in generation.tokens) / len(generation.tokens),
        "samples": generation.texts[:3],
    }


def steer(model, prompts, patch, args) -> tuple:
    log = EffectLog()
    generation = generate_with_patches(model, prompts, [patch], max_new_tokens=args.max_new_tokens, record=log)
    return generation, log.summary()


def figure(rows: list[dict], baseline: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, marker in (("innsteer", "o"), ("actadd", "s")):
        points = sorted([(0.0, baseline)] + [(r["signed_delta_norm"], r[method]) for r in rows], key=lambda p: p[0])
        axes[0].plot([x for x, _ in points], [m["p_positive"] for _, m in points], marker=marker, label=method)
        axes[1].scatter([r[method]["p_positive"] for r in rows], [r[method]["perplexity"] for r in rows],
                        marker=marker, label=method)
    axes[1].scatter([baseline["p_positive"]], [baseline["perplexity"]], marker="*", s=150, c="k", label="unsteered")
    axes[0].set_xlabel("signed mean ||Δh|| (negative: towards negative sentiment)")
    axes[0].set_ylabel("probe P(positive) of continuations")
    axes[1].set_xlabel("probe P(positive)")
    axes[1].set_ylabel("perplexity under the unsteered model")
    axes[1].set_yscale("log")
    for axis in axes:
        axis.legend()
        axis.grid(alpha=0.3)
    fig.suptitle("INNSteer (coupling flow) vs ActAdd at matched ||Δh||, SmolLM2-135M-Instruct")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layer", type=int, default=12)
    parser.add_argument("--alphas", default="-4,-2,-1,1,2,4")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--probe-layers", default="8,12,16,20,24")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "analyses" / "results" / "innsteer_sentiment.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "analyses" / "results" / "innsteer_sentiment.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = load_model(device="cpu")
    probe, lexicon, scorer_report = validate_scorers(model, [int(x) for x in args.probe_layers.split(",")])
    print("scorers:", json.dumps(scorer_report, indent=1))

    site = Site(args.layer)
    batch, reply_start = replies(model, read("steer/positive.txt"))
    positive = collect_activations(model, batch, site, slice(reply_start, None))
    batch, reply_start = replies(model, read("steer/negative.txt"))
    negative = collect_activations(model, batch, site, slice(reply_start, None))
    mean_difference = positive.mean(0) - negative.mean(0)

    flow = coupling_flow(model.cfg.d_model, n_blocks=4, hidden=256, seed=args.seed)
    config = TrainConfig(steps=args.steps, batch_size=64, lr=1e-3, weight_decay=1e-3, eval_every=25, patience=4,
                         seed=args.seed)
    fit_start = time.perf_counter()
    result = train_innsteer(flow, positive, negative, config=config)
    fit_seconds = time.perf_counter() - fit_start
    print(f"flow: val loss {result.history.initial_val:.3f} -> {result.history.best_val:.3f}, "
          f"val accuracy {result.val_accuracy:.3f}, {fit_seconds:.0f}s")

    prompts = chat_prompts(model, read("prompts.txt"))
    baseline = evaluate(model, prompts, generate_with_patches(model, prompts, max_new_tokens=args.max_new_tokens),
                        probe, lexicon)
    print("unsteered:", {k: v for k, v in baseline.items() if k != "samples"})
    rows = []
    for alpha in [float(a) for a in args.alphas.split(",")]:
        intervention = innsteer_intervention(flow, result.delta, alpha)
        generation, effect = steer(model, prompts, Patch(site, intervention, "generated"), args)
        innsteer = evaluate(model, prompts, generation, probe, lexicon) | {"effect": effect}
        delta = effect["mean_delta_norm"]
        scale = (1 if alpha > 0 else -1) * delta / float(mean_difference.norm())
        generation, effect = steer(model, prompts, Patch(site, AddVector(mean_difference, scale), "generated"), args)
        actadd = evaluate(model, prompts, generation, probe, lexicon) | {"effect": effect, "scale": scale}
        rows.append({"alpha": alpha, "signed_delta_norm": (1 if alpha > 0 else -1) * delta,
                     "innsteer": innsteer, "actadd": actadd})
        print(f"alpha {alpha:+.2f} |dh| {delta:6.2f}: INNSteer P+ {innsteer['p_positive']:.3f} "
              f"ppl {innsteer['perplexity']:.2f} | ActAdd P+ {actadd['p_positive']:.3f} ppl {actadd['perplexity']:.2f}")

    results = {
        "analysis": "INNSteer vs mean-difference ActAdd on continuation sentiment at matched ||Δh||",
        "model": model.cfg.model_name,
        "site": str(site),
        "positions": "generated tokens",
        "decoding": f"greedy, {args.max_new_tokens} new tokens",
        "prompts": len(prompts),
        "steering_rows": {"positive": int(positive.shape[0]), "negative": int(negative.shape[0])},
        "activation_norm_mean": float(torch.cat([positive, negative]).norm(dim=-1).mean()),
        "mean_difference_norm": float(mean_difference.norm()),
        "flow": {
            "config": flow.config(),
            "train_config": vars(config),
            "initial_val_loss": result.history.initial_val,
            "best_val_loss": result.history.best_val,
            "best_step": result.history.best_step,
            "stopped_early": result.history.stopped_early,
            "val_accuracy_latent_classifier": result.val_accuracy,
            "latent_delta_norm": float(result.delta.norm()),
            "fit_seconds": fit_seconds,
        },
        "scorers": scorer_report,
        "unsteered": baseline,
        "sweep": rows,
        "seconds": time.perf_counter() - start,
        "machine": f"{platform.machine()}, torch threads {torch.get_num_threads()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    figure(rows, baseline, args.figure)
    print(f"wrote {args.out} and {args.figure} in {results['seconds']:.0f}s")


if __name__ == "__main__":
    main()
