"""Build the SAE bank feature-flow work uses: residual SAEs at every layer plus MLP and attention SAEs
for a band of middle layers, all from one activation pass per batch; evaluate every SAE.

    flock /tmp/flowsteer-cpu.lock python analyses/build_flow_bank.py            # 30 res + 13 mlp + 13 att
    python analyses/build_flow_bank.py --res-layers 6,7,11,12,16,17 --band 7,12,17 --out DIR   # a smaller bank:
        # just what deactivation at target layers 7/12/17 needs (each target's res, its previous res, mlp, att)

The bank goes to ``cache_dir("saes")/smollm2-135m-instruct-flow`` (``~/.cache/flowsteer/saes/...``) with
``metrics.json`` / ``metrics.md`` beside it; ``SAEBank.load(path, model)`` reads it.
"""

from __future__ import annotations

import argparse
import time

import torch

from flowsteer import load_model
from flowsteer.cli.train_saes import parse_count, parse_layers
from flowsteer.paths import cache_dir, write_json
from flowsteer.saes import SAETrainingConfig, evaluate_bank, metrics_markdown, train_saes
from flowsteer.sites import Site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--band", default="6-18", help="layers that also get MLP and attention SAEs")
    parser.add_argument("--res-layers", default="all", help="layers that get residual SAEs")
    parser.add_argument("--tokens", default="300k")
    parser.add_argument("--out", default=str(cache_dir("saes") / "smollm2-135m-instruct-flow"))
    parser.add_argument("--ce-tokens", default="2k")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(device="cpu")
    band = parse_layers(args.band, model.cfg.n_layers)
    res = parse_layers(args.res_layers, model.cfg.n_layers)
    sites = sorted([Site(layer, "resid_post") for layer in res]
                   + [Site(layer, kind) for layer in band for kind in ("mlp_out", "attn_out")])
    # The cached flow bank (and every flow result built on it) predates passes and the sink filter; these settings
    # rebuild it. The current defaults (passes=4, max_norm_ratio=20) raise residual EV by ~0.045 (docs/saes.md).
    config = SAETrainingConfig(tokens=parse_count(args.tokens), passes=1, max_norm_ratio=None)
    start = time.perf_counter()
    bank = train_saes(model, sites, config, out=args.out, resume=True)
    seconds = time.perf_counter() - start
    print(f"trained {len(bank)} SAEs on {config.tokens:,} tokens each in {seconds:.0f} s "
          f"({config.tokens / seconds:.0f} tok/s); {bank.info['training']['timing']}", flush=True)
    start = time.perf_counter()
    results = evaluate_bank(model, bank, eval_tokens=16_384, ce_tokens=parse_count(args.ce_tokens))
    write_json(f"{args.out}/metrics.json", {"train_seconds": round(seconds, 1), "eval_seconds":
                                            round(time.perf_counter() - start, 1), "sites": results})
    with open(f"{args.out}/metrics.md", "w") as handle:
        handle.write(metrics_markdown(results))
    print(metrics_markdown(results))


if __name__ == "__main__":
    main()
