"""Greedy generation throughput: stock TransformerLens vs flowsteer (no patch, identity patch, one
add-vector patch) vs the transformers model's own ``generate``.

Batch 1 and 8, 64 new tokens (EOS ignored so every run makes the same number of tokens), chat
prompts. Each configuration runs ``--repeats`` times, interleaved, and the best time counts.
Prints a table and writes JSON (default ``benchmarks/results/generation.json``).

    python benchmarks/generation.py [--model NAME] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

from flowsteer import chat_prompts, load_model
from flowsteer.models.embedded import EMBEDDED_MODELS
from flowsteer.models.loading import converted_gguf_dir
from flowsteer.patching import AddVector, Function, Patch, generate_with_patches
from flowsteer.paths import write_json

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
NEW_TOKENS = 64


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
    return AutoModelForCausalLM.from_pretrained(converted_gguf_dir(EMBEDDED_MODELS[name]), dtype=torch.float32).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=None, help="layer of the add-vector patch (default n_layers//2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    args = parser.parse_args()

    model = load_model(args.model)
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
                prompts if len(prompts) > 1 else prompts[0], max_new_tokens=NEW_TOKENS, do_sample=False,
                verbose=False, stop_at_eos=False, return_type="tokens",
            )
            return out[:, -NEW_TOKENS:].tolist()
        if name == "transformers_generate":
            encoded = model.tokenizer(prompts, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = hf.generate(
                    **encoded, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                )
            return out[:, -NEW_TOKENS:].tolist()
        return generate_with_patches(model, prompts, configs[name], max_new_tokens=NEW_TOKENS, stop_at_eos=False).tokens

    results = {}
    for batch in (1, 8):
        prompts = chat_prompts(model, INSTRUCTIONS[:batch])
        best = {name: float("inf") for name in configs}
        outputs = {}
        for name in configs:  # warm-up
            run(name, prompts[:1])
        for _ in range(args.repeats):
            for name in configs:
                start = time.perf_counter()
                outputs[name] = run(name, prompts)
                best[name] = min(best[name], time.perf_counter() - start)
        rates = {name: batch * NEW_TOKENS / seconds for name, seconds in best.items()}
        stock_tokens = outputs["transformer_lens_generate"]
        results[f"batch_{batch}"] = {
            "tokens_per_second": rates,
            "seconds": best,
            "add_vector_vs_flowsteer_unpatched": rates["flowsteer_add_vector_patch"] / rates["flowsteer_no_patch"],
            "add_vector_vs_transformers": (
                rates["flowsteer_add_vector_patch"] / rates["transformers_generate"] if hf is not None else None
            ),
            "flowsteer_vs_transformer_lens": rates["flowsteer_no_patch"] / rates["transformer_lens_generate"],
            "unpatched_identical_to_transformer_lens": outputs["flowsteer_no_patch"] == stock_tokens,
            "identity_patch_identical_to_transformer_lens": outputs["flowsteer_identity_patch"] == stock_tokens,
            "transformers_identical_to_transformer_lens": (
                outputs["transformers_generate"] == stock_tokens if hf is not None else None
            ),
        }
    report = {
        "benchmark": "greedy generation throughput",
        "model": args.model,
        "new_tokens": NEW_TOKENS,
        "repeats": args.repeats,
        "add_vector_site": f"{layer}/res",
        "torch_threads": torch.get_num_threads(),
        "device": str(model.cfg.device),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    write_json(args.out, report)
    print(f"{'configuration':<28} {'batch 1 tok/s':>14} {'batch 8 tok/s':>14}")
    for name in configs:
        row = [results[f"batch_{b}"]["tokens_per_second"][name] for b in (1, 8)]
        print(f"{name:<28} {row[0]:>14.1f} {row[1]:>14.1f}")
    for batch in (1, 8):
        r = results[f"batch_{batch}"]
        ratio = r["add_vector_vs_transformers"]
        print(
            f"batch {batch}: add-vector / unpatched = {r['add_vector_vs_flowsteer_unpatched']:.2f}x, "
            f"add-vector / transformers = {ratio:.2f}x, flowsteer / TransformerLens = "
            f"{r['flowsteer_vs_transformer_lens']:.2f}x, identical to TransformerLens: "
            f"{r['unpatched_identical_to_transformer_lens']} (identity patch: "
            f"{r['identity_patch_identical_to_transformer_lens']})"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
