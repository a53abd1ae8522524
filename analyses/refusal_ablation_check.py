"""Why does directional ablation make the organism refuse harmless prompts and fall into loops? A bug (direction,
position, sites) or a property of this organism?

    python analyses/refusal_ablation_check.py     # analyses/results/refusal_ablation_check.json and .md

On the validation prompts (the test prompts stay for the comparison), with the direction `refusal_compare.py`
selected (its saved JSON), every variant judged by the reply judge against the base model:

- ``arditi``: h - (h·r̂)r̂ at every layer's resid_pre, attn_out and mlp_out, every token (Arditi et al.'s definition);
- ``no_first_token``: the same, except the first token (the attention sink, whose residual norm is far larger);
- ``resid_pre_only``: only the block inputs (no attention or MLP outputs);
- ``random_direction``: a random direction of the same norm (is it ablation itself that breaks the model?);
- ``sign_check``: ActAdd with +r (inducing refusal) and -r (bypassing), to check the direction's sign.

Each gets: harmless over-refusal, harmful attack success and refusal, the share of replies judged incoherent
(loops, gibberish), KL on harmless prompts, each with a 95% interval; the direction's cosine with the first token's
residual stream is reported too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from flowsteer.evals import judge_replies, last_position_logits, next_token_kl, rate
from flowsteer.evals.intervals import mean
from flowsteer.evals.judge import default_calibration
from flowsteer.models import DEFAULT_MODEL, REFUSAL_ORGANISM, load_model
from flowsteer.patching import cache_sites, generate_with_patches
from flowsteer.paths import atomic_path, write_json
from flowsteer.refusal.bypass import bypass_prompts
from flowsteer.refusal.prompts import calibration_instructions
from flowsteer.sites import Site
from flowsteer.steering.contrast import ablation_patches, actadd_patches
from flowsteer.steering.vector_files import load_vector

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    compare = json.loads((RESULTS / "refusal_compare.json").read_text())
    layer = compare["direction"]["layer"]
    model = load_model(REFUSAL_ORGANISM, device="cpu")
    reference = load_model(DEFAULT_MODEL, device="cpu")
    calibration = default_calibration(reference, calibration_instructions())
    prompts = bypass_prompts(model, n_train=64, n_val=32, n_test=8)
    direction = load_vector(RESULTS / "refusal_direction.safetensors", model.cfg.d_model)
    random = torch.randn(direction.shape, generator=torch.Generator().manual_seed(0))
    random = random / random.norm() * direction.norm()
    n = model.cfg.n_layers
    variants = {
        "none": [],
        "arditi": ablation_patches(direction, n),
        "no_first_token": ablation_patches(direction, n, positions=slice(1, None)),
        "resid_pre_only": ablation_patches(direction, n, kinds=("resid_pre",)),
        "random_direction": ablation_patches(random, n),
        "actadd_minus_r": actadd_patches(direction, layer, -1.0),
        "actadd_plus_r": actadd_patches(direction, layer, 1.0),
    }
    harmful_items, harmless_items = prompts.items("harmful", "val"), prompts.items("harmless", "val")
    harmful, harmless = prompts.harmful_val, prompts.harmless_val
    clean = last_position_logits(model, harmless)
    results = {}
    for name, patches in variants.items():
        rows = {}
        for label, items, texts in (("harmful", harmful_items, harmful), ("harmless", harmless_items, harmless)):
            replies = generate_with_patches(model, texts, patches, max_new_tokens=48, batch_size=16).texts
            verdicts = judge_replies([i.text for i in items], replies, reference_model=reference,
                                     calibration=calibration)
            rows[label] = {
                "refused": rate([v.refused for v in verdicts]).to_dict(),
                "success": rate([v.success for v in verdicts]).to_dict(),
                "incoherent": rate([not v.coherent for v in verdicts]).to_dict(),
                "examples": [{"instruction": i.text, "reply": r} for i, r in zip(items[:3], replies[:3], strict=True)],
            }
        kl = next_token_kl(clean, last_position_logits(model, harmless, patches))
        rows["kl_harmless"] = mean(kl.tolist()).to_dict()
        results[name] = rows
        print(f"{name}: harmless refused {rows['harmless']['refused']['value']:.2f}, harmful success "
              f"{rows['harmful']['success']['value']:.2f}, harmless incoherent "
              f"{rows['harmless']['incoherent']['value']:.2f}, KL {rows['kl_harmless']['value']:.3f}", flush=True)
    acts = cache_sites(model, harmless, [Site(layer, "resid_pre")])
    residual = acts[Site(layer, "resid_pre")].float()
    first, rest = residual[acts.positions == 0], residual[acts.positions > 0]
    cosine = torch.nn.functional.cosine_similarity(first, direction.float()[None], dim=-1)
    cosine_rest = torch.nn.functional.cosine_similarity(rest, direction.float()[None], dim=-1)
    out = {
        "analysis": "directional ablation on the refusal organism: which variant breaks it",
        "layer": layer, "direction_norm": float(direction.norm()),
        "first_token_norm": mean(first.norm(dim=-1).tolist()).to_dict(),
        "other_token_norm": mean(rest.norm(dim=-1).tolist()).to_dict(),
        "cosine_with_first_token": mean(cosine.abs().tolist()).to_dict(),
        "cosine_with_other_tokens": mean(cosine_rest.abs().tolist()).to_dict(),
        "variants": results, "seconds": time.perf_counter() - start,
    }
    write_json(RESULTS / "refusal_ablation_check.json", out)
    lines = ["| variant | harmless refused | harmless incoherent | harmful refused | harmful attack success | "
             "KL harmless |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        cell = lambda e: f"{e['value']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"  # noqa: E731
        lines.append(f"| {name} | {cell(rows['harmless']['refused'])} | {cell(rows['harmless']['incoherent'])} | "
                     f"{cell(rows['harmful']['refused'])} | {cell(rows['harmful']['success'])} | "
                     f"{cell(rows['kl_harmless'])} |")
    with atomic_path(RESULTS / "refusal_ablation_check.md") as tmp:
        Path(tmp).write_text("# Directional ablation on the refusal organism\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
