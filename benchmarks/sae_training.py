"""Multi-site TopK SAE training from one activation cache: flowsteer vs EleutherAI sparsify vs sae-lens.

The model runs once (`sae_trainers.harvest`: ``--tokens`` activations per site, position 0 and attention
sinks left out, shuffled); its time is measured on its own (``--harvest-repeats``), since it dominates
end-to-end time and is the same work whoever trains. Every trainer then trains one SAE per site from that
cache: the same activations, in the same batches and order (flowsteer's), with the same width, k, batch
size, number of steps (``tokens * passes / batch_size``), AuxK weight and dead-latent window. What each
trainer could not be given identically is listed under ``unmatched`` in the JSON. Contenders
(``--contenders``; see `sae_trainers`): ``flowsteer``, ``sparsify`` (its default schedule-free SignSGD),
``sparsify-adam``, ``sae-lens-multi``; they run interleaved, ``--repeats`` times. Throughput is training
activations per site per second (``tokens * passes / seconds``; all sites train at once).

Quality, on the same held-out tokens with flowsteer's functions (`sae_quality`): explained variance,
MSE, L0 and dead fraction on ``--eval-tokens`` activations per site, and CE loss recovered on
``--ce-tokens`` tokens.

    flock /tmp/flowsteer-cpu.lock python benchmarks/sae_training.py            # 9 sites, 100k tokens
    python benchmarks/sae_training.py --quick                                  # smoke run, ~1 minute
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from protocol import Result, add_arguments, interleave, save, stamp, table
from sae_quality import ce_recovered, mean_over_sites, reconstruction
from sae_trainers import CONTENDERS, TRAINERS, batch_stream, harvest

from flowsteer import load_model
from flowsteer.cli.train_saes import parse_count
from flowsteer.data import token_chunks
from flowsteer.saes import SAETrainingConfig
from flowsteer.sites import Site

RESULTS = Path(__file__).parent / "results" / "sae_training.json"
DEFAULTS = SAETrainingConfig()
QUICK = {"tokens": "4k", "layers": "10,12", "kinds": "res,att", "d_sae": 256, "k": 16, "passes": 1,
         "eval_tokens": 1024, "ce_tokens": 256, "harvest_repeats": 1}
UNMATCHED = {
    "all": "the same cache, batches, order, width, k, batch size, steps, AuxK weight and dead window",
    "flowsteer": "Adam (fused), lr warm-up then constant, linear decay to 0 over the last decay_fraction of "
                 "steps; inputs scaled to E||x||^2 = d_in (estimated on the first round); b_dec starts at the "
                 "mean of 64 batches; decoder rows renormalised after every step",
    "sparsify": "sparsify.Trainer's default optimizer: schedule-free SignSGD (momentum 0.95) at its default lr "
                "5e-3 / sqrt(d_sae / 2^14), no schedule (sign updates make flowsteer's Adam lr meaningless); "
                "loss FVU per batch on raw activations (no input scaling); b_dec starts at the first batch's "
                "mean; one init seed for all sites (it reseeds per SAE); dead = not fired for MORE than the "
                "window; evaluated with the schedule-free averaged weights, as its checkpoints hold",
    "sparsify-adam": "as sparsify but torch.optim.Adam (no bitsandbytes installed) at flowsteer's lr, warm-up, "
                     "then linear decay to 0 over ALL steps (transformers' get_linear_schedule_with_warmup)",
    "sae-lens-multi": "Adam at flowsteer's lr and warm-up, decay over the last decay_fraction of steps to lr/10 "
                      "(sae-lens refuses a decay to 0); its TopK default rescale_acts_by_decoder_norm=True; input "
                      "norm estimated on the stream's first 10 batches (not trained on twice: it trains the "
                      "whole stream after); dead window in steps (dead_window / batch_size)",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="100k", help="cached activations per site (default 100k)")
    parser.add_argument("--layers", default="10,11,12")
    parser.add_argument("--kinds", default="res,mlp,att")
    parser.add_argument("--d-sae", type=int, default=DEFAULTS.d_sae)
    parser.add_argument("--k", type=int, default=DEFAULTS.k)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--passes", type=int, default=DEFAULTS.passes, help="passes over the cache")
    parser.add_argument("--harvest-dtype", default=DEFAULTS.harvest_dtype, choices=("float32", "bfloat16"))
    parser.add_argument("--contenders", default="flowsteer,sparsify,sae-lens-multi",
                        help=f"comma-separated, from {', '.join(CONTENDERS)}")
    parser.add_argument("--eval-tokens", type=int, default=16_384, help="held-out activations per site")
    parser.add_argument("--ce-tokens", type=int, default=2_048, help="held-out tokens for CE loss recovered")
    parser.add_argument("--harvest-repeats", type=int, default=None, help="default: --repeats")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke-run size: " + str(QUICK))
    add_arguments(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}; choose from {', '.join(CONTENDERS)}")
    if args.harvest_repeats is None:
        args.harvest_repeats = args.repeats
    return args


def timed_trainer(name, model, cache, config, stream, held_out):
    """A contender that times its training only, then records its held-out mean explained variance."""

    def call() -> Result:
        torch.manual_seed(config.seed)
        start, cpu_start = time.perf_counter(), time.process_time()
        saes = TRAINERS[name](model, cache, config, stream)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        ev = mean_over_sites(reconstruction(saes, held_out))["explained_variance"]
        return Result({"seconds": seconds, "cpu_seconds": cpu_seconds, "explained_variance": ev}, saes)

    return call


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    model = load_model(device="cpu")
    sites = sorted(Site.parse(f"{layer}/{kind}") for layer in args.layers.split(",") for kind in args.kinds.split(","))
    tokens = parse_count(args.tokens)
    config = SAETrainingConfig(d_sae=args.d_sae, k=args.k, tokens=tokens, passes=args.passes,
                               batch_size=args.batch_size, harvest_dtype=args.harvest_dtype)
    contenders = args.contenders.split(",")
    if any(name.startswith("sparsify") for name in contenders):
        import datasets  # noqa: F401  (imported here, so that the first timed call does not pay for it)
        import sparsify  # noqa: F401
    packages = ["eai-sparsify", "sae-lens", "schedulefree"]
    started = stamp(f"float32 SAE training; harvest {config.harvest_dtype}", packages)
    chunks = token_chunks(model.tokenizer, "train", config.context)

    print(f"harvest: {tokens} activations at {len(sites)} sites, {args.harvest_repeats} time(s)", flush=True)
    harvests = interleave({"harvest": lambda: harvest(model, sites, chunks, tokens, config)}, args.harvest_repeats)
    cache = harvests.outputs.pop("harvest")
    eval_chunks = token_chunks(model.tokenizer, "eval", config.context)
    held_out = harvest(model, sites, eval_chunks, args.eval_tokens, config, seed=1)
    stream = batch_stream(tokens, config, len(sites), model.cfg.d_model)

    def progress(repeat, name, numbers):
        print(f"repeat {repeat + 1} {name}: {numbers['seconds']:.1f} s, EV {numbers['explained_variance']:.3f}",
              flush=True)

    trials = interleave({name: timed_trainer(name, model, cache, config, stream, held_out) for name in contenders},
                        args.repeats, on_call=progress)
    n_ce = max(1, -(-args.ce_tokens // (config.context - 1)))
    print(f"CE loss recovered on {n_ce} held-out chunks", flush=True)
    ce = ce_recovered(model, trials.outputs, eval_chunks[:n_ce], sites)

    trained = config.total_steps * config.batch_size
    results = {}
    for name in contenders:
        per_site = reconstruction(trials.outputs[name], held_out)
        for site, values in ce[name].items():
            per_site[site].update(values)
        results[name] = {
            "train_tokens_per_s_best": trained / trials.min(name),
            "train_tokens_per_s_median": trained / trials.median(name),
            "mean": mean_over_sites(per_site), "per_site": per_site,
        }
    harvest_s = harvests.min("harvest")
    best = max(results, key=lambda n: results[n]["train_tokens_per_s_best"])
    print(f"\nharvest (model forward, {len(sites)} sites): best {harvest_s:.1f} s = {tokens / harvest_s:.0f} tok/s, "
          f"median {harvests.median('harvest'):.1f} s")
    print(f"training: {config.total_steps} steps x {config.batch_size} = {trained} activations per site\n")
    print("| trainer | train s (min / median) | train tok/s (best) | x fastest | + harvest s | EV | L0 | dead "
          "| CE rec |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["mean"]
        print(f"| {name} | {trials.min(name):.1f} / {trials.median(name):.1f} | {r['train_tokens_per_s_best']:.0f} | "
              f"{r['train_tokens_per_s_best'] / results[best]['train_tokens_per_s_best']:.2f} | "
              f"{harvest_s + trials.min(name):.0f} | {m['explained_variance']:.3f} | {m['l0']:.1f} | "
              f"{100 * m['dead_fraction']:.1f}% | {m['ce_loss_recovered']:.3f} |")
    print("\n" + table(trials))
    payload = {
        "benchmark": "multi-site TopK SAE training from one activation cache",
        "sites": [str(s) for s in sites], "tokens_per_site": tokens, "trained_activations_per_site": trained,
        "held_out_tokens": len(held_out[sites[0]]), "ce_tokens": ce[contenders[0]][str(sites[0])]["ce_tokens"],
        "config": config.__dict__, "contenders": contenders,
        "unmatched": {k: v for k, v in UNMATCHED.items() if k == "all" or k in contenders},
        "harvest": {"seconds": harvests.stats("harvest"), "tokens_per_s_best": tokens / harvest_s,
                    "protocol": harvests.protocol()},
        "results": results,
    }
    save(args.out, payload, trials, started)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
