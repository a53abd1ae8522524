"""Training throughput and quality: flowsteer's multi-site trainer vs sae-lens's runners.

One run, the same model object, corpus chunks, sites, architecture (TopK, k=32, AuxK), width, batch
size, learning-rate schedule and token count for all three:

1. ``flowsteer``: `flowsteer.saes.train_saes` on all sites from one forward pass per batch;
2. ``sae-lens multi``: sae-lens's `MultiSAETrainingRunner` on the same sites (one forward pass feeds all);
3. ``sae-lens single x N``: sae-lens's `LanguageModelSAETrainingRunner` once per site.

sae-lens runs fully offline (``override_dataset`` = the corpus chunks as a `datasets.Dataset`,
``override_model`` = the loaded model). Quality is measured identically for all with
`flowsteer.saes.reconstruction_metrics` on the same held-out activations (positions 1..).

    flock /tmp/flowsteer-cpu.lock python benchmarks/sae_training.py --tokens 100k
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

from flowsteer import load_model
from flowsteer.cli.train_saes import parse_count
from flowsteer.data import token_chunks
from flowsteer.patching import cache_sites
from flowsteer.saes import SAETrainingConfig, reconstruction_metrics, train_saes
from flowsteer.sites import Site

RESULTS = Path(__file__).parent / "results" / "sae_training.json"


def sae_lens_topk(config: SAETrainingConfig, d_in: int):
    from sae_lens import TopKTrainingSAEConfig

    return TopKTrainingSAEConfig(d_in=d_in, d_sae=config.d_sae, k=config.k, aux_loss_coefficient=config.aux_coefficient,
                                 normalize_activations="expected_average_only_in")


def sae_lens_common(config: SAETrainingConfig, tmp: Path) -> dict:
    """sae-lens settings matching flowsteer's: batch, LM batch, lr schedule, dead window, position 0 dropped."""
    from sae_lens import LoggingConfig

    steps = config.total_steps
    return dict(
        model_name="smollm2-135m-instruct-local", dataset_path="local/flowsteer-corpus", streaming=False,
        context_size=config.context, prepend_bos=False, seqpos_slice=(1, None), training_tokens=config.tokens,
        train_batch_size_tokens=config.batch_size, store_batch_size_prompts=config.lm_batch,
        # sae-lens's mixing buffer holds n_batches_in_buffer x (context - 1) tokens: 16k here
        n_batches_in_buffer=-(-16_384 // (config.context - 1)),
        lr=config.lr, lr_warm_up_steps=config.warmup_steps, lr_decay_steps=int(config.decay_fraction * steps),
        dead_feature_window=max(1, config.dead_window // config.batch_size), device="cpu", seed=config.seed,
        logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=10, checkpoint_path=None,
        output_path=None,
    )


def run_sae_lens_multi(model, dataset, sites, config, tmp):
    from sae_lens.multi_sae_training_runner import MultiSAETrainingRunner, MultiSAETrainingRunnerConfig

    common = sae_lens_common(config, tmp)
    cfg = MultiSAETrainingRunnerConfig(
        saes={str(s): sae_lens_topk(config, model.cfg.d_model) for s in sites},
        hook_names={str(s): s.hook_name for s in sites}, **common,
    )
    saes = MultiSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
    return {Site.parse(name): sae for name, sae in saes.items()}


def run_sae_lens_single(model, dataset, site, config, tmp):
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner

    cfg = LanguageModelSAERunnerConfig(sae=sae_lens_topk(config, model.cfg.d_model), hook_name=site.hook_name,
                                       is_dataset_tokenized=True, **sae_lens_common(config, tmp))
    return LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()


def quality(saes: dict, held_out: dict) -> dict:
    per_site = {str(site): reconstruction_metrics(sae, held_out[site]) for site, sae in saes.items()}
    mean = {key: sum(m[key] for m in per_site.values()) / len(per_site)
            for key in ("explained_variance", "mse", "l0", "dead_fraction")}
    return {"mean": mean, "per_site": per_site}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="100k", help="training activations per site (default 100k)")
    parser.add_argument("--layers", default="10,11,12")
    parser.add_argument("--kinds", default="res,mlp,att")
    parser.add_argument("--skip-single", action="store_true", help="leave out the N single-site sae-lens runs")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    import tempfile

    import datasets

    model = load_model(device="cpu")
    sites = [Site.parse(f"{layer}/{kind}") for layer in args.layers.split(",") for kind in args.kinds.split(",")]
    config = SAETrainingConfig(tokens=parse_count(args.tokens), passes=1)  # sae-lens sees each activation once
    chunks = token_chunks(model.tokenizer, "train", config.context)
    dataset = datasets.Dataset.from_dict({"tokens": chunks.tolist()})
    eval_chunks = token_chunks(model.tokenizer, "eval", config.context)[:128]
    held_out = {}
    with torch.no_grad():
        for start in range(0, len(eval_chunks), 32):
            acts = cache_sites(model, eval_chunks[start : start + 32], sites)
            for site in sites:
                held_out.setdefault(site, []).append(acts[site][:, 1:].reshape(-1, model.cfg.d_model))
    held_out = {site: torch.cat(parts) for site, parts in held_out.items()}

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("flowsteer", lambda: train_saes(model, sites, config, chunks=chunks, progress=False))]
        runs.append(("sae-lens multi", lambda: run_sae_lens_multi(model, dataset, sites, config, Path(tmp))))
        if not args.skip_single:
            runs.append((f"sae-lens single x {len(sites)}",
                         lambda: {s: run_sae_lens_single(model, dataset, s, config, Path(tmp)) for s in sites}))
        for name, run in runs:
            print(f"--- {name} ---", flush=True)
            start = time.perf_counter()
            saes = dict(run())
            seconds = time.perf_counter() - start
            results[name] = {"seconds": round(seconds, 1), "tokens_per_s": round(config.tokens / seconds, 1),
                             **quality(saes, held_out)}
            print(f"{name}: {seconds:.0f} s, {config.tokens / seconds:.0f} tok/s, "
                  f"EV {results[name]['mean']['explained_variance']:.3f}, "
                  f"dead {results[name]['mean']['dead_fraction']:.3f}", flush=True)
    base = results["sae-lens multi"]["tokens_per_s"]
    print("\n| method | seconds | tokens/s | x sae-lens multi | mean EV | mean L0 | mean dead |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        m = r["mean"]
        print(f"| {name} | {r['seconds']:.0f} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f} | "
              f"{m['explained_variance']:.3f} | {m['l0']:.1f} | {100 * m['dead_fraction']:.1f}% |")
    import sae_lens

    payload = {
        "sites": [str(s) for s in sites], "tokens_per_site": config.tokens, "held_out_tokens": len(held_out[sites[0]]),
        "config": config.__dict__, "machine": {"threads": torch.get_num_threads(), "python": sys.version.split()[0],
                                               "torch": torch.__version__, "sae_lens": sae_lens.__version__,
                                               "platform": platform.platform()},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
