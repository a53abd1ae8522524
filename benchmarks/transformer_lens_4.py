"""What of flowsteer works on TransformerLens 4's ``TransformerBridge``: a compatibility probe, not a timing.

Run it with a TransformerLens 4 environment (sae-lens still pins transformer-lens < 4, so not flowsteer's own):

    python -m venv /tmp/tl4 && /tmp/tl4/bin/pip install torch==2.13.0 "transformer-lens>=4" jaxtyping networkx \
        safetensors scipy tqdm matplotlib
    /tmp/tl4/bin/python benchmarks/transformer_lens_4.py      # writes benchmarks/results/transformer_lens_4.json

A tiny random Llama (the shape of flowsteer's test model, saved as a Hugging Face folder, no hub) is booted as a
bridge; the probe records which TransformerLens 3 calls flowsteer relies on still behave the same, then imports
flowsteer with stand-ins for the names TransformerLens 4 removed (``HookedTransformer``, ``HookedTransformerConfig``,
``transformer_lens.components``) and runs the patching API on the bridge. docs/transformer-lens-4.md reads the result.
"""

from __future__ import annotations

import ast
import datetime
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch
import transformer_lens as tl
from transformer_lens.model_bridge import TransformerBridge
from transformers import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
results: dict = {}


def check(name: str, fn) -> None:
    """Record ``fn()``'s value, or the error it raised."""
    try:
        value = fn()
        results[name] = {"ok": True, "value": value}
    except Exception as error:  # a probe: every failure is a finding
        results[name] = {"ok": False, "error": f"{type(error).__name__}: {str(error)[:300]}"}
    print(f"{name}: {results[name]}", flush=True)


def byte_tokenizer():
    """flowsteer's test tokenizer, taken from flowsteer/models/tiny.py without importing flowsteer."""
    tree = ast.parse((REPO / "flowsteer/models/tiny.py").read_text())
    wanted = [node for node in tree.body
              if (isinstance(node, ast.Assign) and node.targets[0].id in ("CHATML_TEMPLATE", "SPECIAL_TOKENS"))
              or (isinstance(node, ast.FunctionDef) and node.name == "byte_tokenizer")]
    namespace: dict = {}
    exec(compile(ast.Module(wanted, []), "tiny.py", "exec"), namespace)
    return namespace["byte_tokenizer"]()


def boot(folder: Path):
    tokenizer = byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return hf, tokenizer, TransformerBridge.boot_transformers(str(folder), device="cpu")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@torch.no_grad()
def probe_bridge(hf, tokenizer, bridge) -> torch.Tensor:
    """The TransformerLens 3 calls flowsteer makes (through flowsteer.models.tl and the patching API)."""
    ids = tokenizer("Hello world", return_tensors="pt").input_ids
    names = [f"blocks.1.hook_{kind}" for kind in ("resid_pre", "resid_mid", "resid_post", "mlp_out", "attn_out")]
    check("logits_vs_hf_raw_max_abs_diff", lambda: max_diff(bridge(ids), hf(ids).logits))
    check("legacy_hook_names_present", lambda: all(name in bridge.hook_dict for name in names))
    check("enable_compatibility_mode", lambda: bridge.enable_compatibility_mode() or "done")
    check("legacy_hook_names_present_in_compatibility_mode", lambda: all(name in bridge.hook_dict for name in names))
    check("logits_vs_hf_compatibility_mode_max_abs_diff", lambda: max_diff(bridge(ids), hf(ids).logits))
    check("log_probs_vs_hf_compatibility_mode_max_abs_diff",
          lambda: max_diff(bridge(ids).log_softmax(-1), hf(ids).logits.log_softmax(-1)))
    fields = ("n_layers", "d_model", "n_ctx", "d_vocab", "device", "model_name", "normalization_type",
              "output_logits_soft_cap", "original_architecture", "default_prepend_bos")
    check("cfg_fields", lambda: {k: str(getattr(bridge.cfg, k, "MISSING")) for k in fields})
    check("to_tokens_untruncated", lambda: bridge.to_tokens("Hi", move_to_device=False, truncate=False).tolist())
    check("W_U_and_ln_final_w_shapes", lambda: [list(bridge.W_U.shape), list(bridge.ln_final.w.shape)])
    check("stop_at_layer_2_shape", lambda: list(bridge(ids, stop_at_layer=2).shape))
    check("stop_at_layer_n_layers_shape", lambda: list(bridge(ids, stop_at_layer=bridge.cfg.n_layers).shape))
    check("start_at_layer_2_shape", lambda: list(bridge(torch.randn(1, ids.shape[1], 64), start_at_layer=2).shape))

    def kv_cache_step() -> float:
        cache = tl.TransformerLensKeyValueCache.init_cache(bridge.cfg, "cpu", 1)
        bridge(ids[:, :-1], past_kv_cache=cache)
        return max_diff(bridge(ids[:, -1:], past_kv_cache=cache)[:, -1], bridge(ids)[:, -1])

    check("past_kv_cache_step_vs_full_pass_max_abs_diff", kv_cache_step)

    def hooks_fire() -> list:
        seen = []
        with bridge.hooks(fwd_hooks=[(names[2], lambda act, hook: seen.append(list(act.shape)))]):
            bridge(ids)
        return seen

    check("hooks_context_fires", hooks_fire)
    return ids


@torch.no_grad()
def probe_flowsteer(bridge, ids: torch.Tensor) -> None:
    """flowsteer's patching API on the bridge, with stand-ins for the names TransformerLens 4 removed."""
    tl.HookedTransformer = TransformerBridge  # module __getattr__ raises only for names not set
    tl.HookedTransformerConfig = type("HookedTransformerConfig", (), {})
    components = types.ModuleType("transformer_lens.components")
    for name in ("Attention", "GroupedQueryAttention", "Unembed", "AbstractAttention"):
        setattr(components, name, type(name, (), {}))
    gated = types.ModuleType("transformer_lens.components.mlps.gated_mlp")
    gated.GatedMLP = type("GatedMLP", (), {})
    sys.modules.update({"transformer_lens.components": components, "transformer_lens.components.mlps":
                        types.ModuleType("transformer_lens.components.mlps"),
                        "transformer_lens.components.mlps.gated_mlp": gated})
    sys.path.insert(0, str(REPO))
    import flowsteer as fs

    bridge.tokenizer.padding_side = "left"
    vector = torch.randn(64) * 10
    steer = fs.Patch("1/res", fs.AddVector(vector, 1.0))
    check("run_with_patches_add_vector_changes_logits",
          lambda: max_diff(fs.run_with_patches(bridge, ["Hello world"], [steer]),
                           fs.run_with_patches(bridge, ["Hello world"])))
    check("cache_sites_five_kinds", lambda: {str(site): list(act.shape) for site, act in fs.cache_sites(
        bridge, ["Hello world"], ["1/res", "1/mlp", "1/att", "1/pre", "1/mid"]).items()})
    check("left_padded_row_vs_alone_last_logits_max_abs_diff", lambda: max_diff(
        fs.run_with_patches(bridge, ["Hi", "Hello world"])[0, -1], fs.run_with_patches(bridge, ["Hi"])[0, -1]))
    check("run_with_patches_last_position",
          lambda: list(fs.run_with_patches(bridge, ["Hi", "Hello world"], last_position=True).shape))
    check("interchange", lambda: list(fs.interchange(bridge, base=["The cat"], source=["The dog"], patches=[
        fs.Patch("1/res", fs.FromSource(), positions=[-1])]).shape))
    check("patches_to_fwd_hooks_in_run_with_hooks", lambda: max_diff(
        bridge.run_with_hooks(ids, fwd_hooks=fs.patches_to_fwd_hooks(bridge, [steer])), bridge(ids)))
    check("run_from_layer", lambda: list(fs.patching.run_from_layer(bridge, ["Hi"], torch.randn(1, 3, 64), 2).shape))
    check("generate_with_patches", lambda: fs.generate_with_patches(bridge, "Hello", max_new_tokens=4).texts)


def main() -> None:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    stamp = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "git_commit": commit.strip(),
             "python": sys.version.split()[0], "torch": torch.__version__,
             "transformer_lens": importlib.metadata.version("transformer-lens"),
             "transformers": importlib.metadata.version("transformers")}
    with tempfile.TemporaryDirectory() as folder:
        hf, tokenizer, bridge = boot(Path(folder))
        ids = probe_bridge(hf, tokenizer, bridge)
        probe_flowsteer(bridge, ids)
    out = Path(__file__).parent / "results" / "transformer_lens_4.json"
    out.write_text(json.dumps({"stamp": stamp, "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
