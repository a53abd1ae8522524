"""Greedy generation throughput: stock TransformerLens vs flowsteer (no patch, identity patch, one
add-vector patch) vs the transformers model's own ``generate``.

Batch 1 and 8, 64 new tokens (EOS ignored so every run makes the same number of tokens), chat
prompts. transformers is read from the GGUF file itself (``gguf_file=``), not from flowsteer's converted folder.

Token identity with transformers is checked like for like. To make 64 tokens, transformers'
``min_new_tokens`` sets the EOS logit to -inf until the last one, so where TransformerLens's greedy token is
EOS, transformers takes its second-best token and the two continue differently. Every token up to and
including each row's first EOS is compared (``transformers_vs_transformer_lens_tokens``: ``identical_up_to_eos``);
it also records, per row, the first differing position and whether it is TransformerLens's first EOS.

After one untimed warm-up call each (one prompt), the configurations run ``--repeats`` times, interleaved
(`protocol.interleave`); tokens/s is reported from the best (min) and the median time.
Prints a table and writes JSON (default ``benchmarks/results/generation.json``).

    python benchmarks/generation.py [--model NAME] [--repeats 3] [--out FILE]
    python benchmarks/generation.py --batches 1 --new-tokens 4 --repeats 1 --out /tmp/g.json   # smoke run
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from protocol import Result, add_arguments, interleave, save, stamp

from flowsteer import chat_prompts, load_model
from flowsteer.models.embedded import EMBEDDED_MODELS
from flowsteer.patching import AddVector, Function, Patch, generate_with_patches

INSTRUCTIONS = [
    "What is the capital of France?",
    "Write a haiku about the ocean.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for staying healthy.",
    "What is 12 + 7?",
    "Tell me a joke about cats.",
    "How do I boil an egg?",
    "Name three primary colours.",
]
RESULTS = Path(__file__).parent / "results" / "generation.json"


def stock_copy(model):
    """The same weights with TransformerLens's own memory layout and attention forward."""
    stock = copy.deepcopy(model)
    for module in stock.modules():
        module.__dict__.pop("forward", None)
        for param in module._parameters.values():
            if param is not None:
                param.data = param.data.contiguous()
    return stock


def hf_model_for(name: str):
    from transformers import AutoModelForCausalLM

    if name not in EMBEDDED_MODELS:
        return None
    gguf = EMBEDDED_MODELS[name].verified_path()
    return AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()


def compare_up_to_eos(reference: list[list[int]], other: list[list[int]], eos: int) -> dict:
    """Compare greedy tokens row by row up to and including ``reference``'s first EOS in each row.

    ``other`` may differ after that EOS (a generator that may not stop there takes its next-best token).
    """
    rows = []
    for ref, oth in zip(reference, other, strict=True):
        end = ref.index(eos) + 1 if eos in ref else len(ref)
        first = next((i for i, (a, b) in enumerate(zip(ref, oth, strict=True)) if a != b), None)
        rows.append({"first_difference": first, "reference_first_eos": end - 1 if eos in ref else None,
                     "identical_up_to_eos": ref[:end] == oth[:end]})
    return {
        "identical_up_to_eos": all(row["identical_up_to_eos"] for row in rows),
        "identical_everywhere": reference == other,
        "every_difference_starts_at_eos": all(
            row["first_difference"] is None or row["first_difference"] == row["reference_first_eos"] for row in rows
        ),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--layer", type=int, default=None, help="layer of the add-vector patch (default n_layers//2)")
    parser.add_argument("--batches", default="1,8", help="batch sizes, comma-separated (at most 8)")
    parser.add_argument("--new-tokens", type=int, default=64)
    add_arguments(parser, RESULTS)
    args = parser.parse_args()
    new_tokens = args.new_tokens
    batches = [int(b) for b in args.batches.split(",")]

    model = load_model(args.model)
    started = stamp(str(next(model.parameters()).dtype), ["transformer-lens", "transformers"])
    stock = stock_copy(model)
    hf = hf_model_for(args.model)
    layer = args.layer if args.layer is not None else model.cfg.n_layers // 2
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    vector = vector / vector.norm() * 8.0
    configs = {
        "transformer_lens_generate": None,
        "flowsteer_no_patch": [],
        "flowsteer_identity_patch": [Patch(f"{layer}/res", Function(lambda a, c: a, "identity"))],
        "flowsteer_add_vector_patch": [Patch(f"{layer}/res", AddVector(vector))],
    }
    if hf is not None:
        configs["transformers_generate"] = None

    def run(name: str, prompts: list[str]) -> list[list[int]]:
        if name == "transformer_lens_generate":
            out = stock.generate(
                prompts if len(prompts) > 1 else prompts[0], max_new_tokens=new_tokens, do_sample=False,
                verbose=False, stop_at_eos=False, return_type="tokens",
            )
            return out[:, -new_tokens:].tolist()
        if name == "transformers_generate":
            encoded = model.tokenizer(prompts, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = hf.generate(
                    **encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                )
            return out[:, -new_tokens:].tolist()
        return generate_with_patches(model, prompts, configs[name], max_new_tokens=new_tokens, stop_at_eos=False).tokens

    results, trials = {}, {}
    for batch in batches:
        prompts = chat_prompts(model, INSTRUCTIONS[:batch])
        warmup = {name: (lambda name=name, prompts=prompts: run(name, prompts[:1])) for name in configs}
        timed = {name: (lambda name=name, prompts=prompts: Result(output=run(name, prompts))) for name in configs}
        trials[f"batch_{batch}"] = batch_trials = interleave(timed, args.repeats, warmup=warmup)
        outputs = batch_trials.outputs
        rates = {name: batch * new_tokens / batch_trials.min(name) for name in configs}
        stock_tokens = outputs["transformer_lens_generate"]
        results[f"batch_{batch}"] = {
            "tokens_per_second": rates,
            "tokens_per_second_median": {name: batch * new_tokens / batch_trials.median(name) for name in configs},
            "seconds": {name: batch_trials.min(name) for name in configs},
            "add_vector_vs_flowsteer_unpatched": rates["flowsteer_add_vector_patch"] / rates["flowsteer_no_patch"],
            "add_vector_vs_transformers": (
                rates["flowsteer_add_vector_patch"] / rates["transformers_generate"] if hf is not None else None
            ),
            "flowsteer_vs_transformer_lens": rates["flowsteer_no_patch"] / rates["transformer_lens_generate"],
            "unpatched_identical_to_transformer_lens": outputs["flowsteer_no_patch"] == stock_tokens,
            "identity_patch_identical_to_transformer_lens": outputs["flowsteer_identity_patch"] == stock_tokens,
            "transformers_vs_transformer_lens_tokens": (
                compare_up_to_eos(stock_tokens, outputs["transformers_generate"], model.tokenizer.eos_token_id)
                if hf is not None else None
            ),
        }
    report = {
        "benchmark": "greedy generation throughput",
        "model": args.model,
        "new_tokens": new_tokens,
        "add_vector_site": f"{layer}/res",
        "device": str(model.cfg.device),
        "transformers_comparison": (
            "greedy tokens compared up to and including each row's first EOS in TransformerLens's output: "
            "transformers' min_new_tokens forbids EOS until the last token, TransformerLens ignores EOS"
        ),
        "results": results,
    }
    save(args.out, report, trials, started)
    print(f"{'configuration':<28} " + " ".join(f"{f'batch {b} tok/s (median)':>26}" for b in batches))
    for name in configs:
        cells = [f"{results[f'batch_{b}']['tokens_per_second'][name]:.1f} "
                 f"({results[f'batch_{b}']['tokens_per_second_median'][name]:.1f})" for b in batches]
        print(f"{name:<28} " + " ".join(f"{c:>26}" for c in cells))
    for batch in batches:
        r = results[f"batch_{batch}"]
        ratio = r["add_vector_vs_transformers"]
        ratio = "n/a" if ratio is None else f"{ratio:.2f}x"
        print(
            f"batch {batch}: add-vector / unpatched = {r['add_vector_vs_flowsteer_unpatched']:.2f}x, "
            f"add-vector / transformers = {ratio}, flowsteer / TransformerLens = "
            f"{r['flowsteer_vs_transformer_lens']:.2f}x, identical to TransformerLens: "
            f"{r['unpatched_identical_to_transformer_lens']} (identity patch: "
            f"{r['identity_patch_identical_to_transformer_lens']})"
        )
        if r["transformers_vs_transformer_lens_tokens"] is not None:
            tokens = r["transformers_vs_transformer_lens_tokens"]
            print(f"batch {batch}: transformers' greedy tokens equal TransformerLens's up to each first EOS: "
                  f"{tokens['identical_up_to_eos']} (every difference starts at that EOS: "
                  f"{tokens['every_difference_starts_at_eos']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
