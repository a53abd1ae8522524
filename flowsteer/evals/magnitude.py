"""Intervention magnitude from an `EffectLog`: mean ||Δh||, ||Δh||/||h||, and the fraction of
(layer, position) locations an intervention changed (digest §2.4(f)).

A location is one token at one layer. It counts as changed when any patch at any site of that layer
(``resid_pre``, ``attn_out``, ``mlp_out``, ...) changed that token by more than ``rtol``·||h||.
ActAdd at one layer changes 1/n_layers of the locations; directional ablation at every layer, all of them.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from flowsteer.patching import EffectLog


def intervention_magnitude(log: EffectLog, n_layers: int, rtol: float = 1e-6) -> dict:
    """Summarise the patches recorded in ``log`` over the tokens they saw.

    Every patch must have seen the same tokens (one `run_with_patches`/`generate_with_patches` call,
    or several with the same patches), so that entry ``i`` of each patch's record is the same token.

    Returns:
        ``tokens`` seen; ``sites`` patched; ``locations`` = n_layers x tokens and ``locations_changed``
        and their ``fraction_changed``; ``edits_changed`` (site, token) pairs; ``mean_delta_norm`` and
        ``mean_relative_delta`` (||Δh||/||h||) over changed (site, token) pairs;
        ``delta_norm_per_token``: Σ over sites of ||Δh||, averaged over tokens; and ``by_kind``: the same
        means per site kind.
    """
    if not log.effects:
        raise ValueError("the EffectLog is empty: pass it as record= to a patched call first")
    counts = {effect.delta.numel() for effect in log.effects}
    if len(counts) != 1:
        raise ValueError(
            f"patches saw different numbers of tokens ({sorted(counts)}); record one patched call (or calls "
            "with the same patches) per EffectLog"
        )
    tokens = counts.pop()
    changed_at_layer: dict[int, torch.Tensor] = {}
    deltas, relatives, total = [], [], torch.zeros(tokens)
    kinds: dict[str, list[torch.Tensor]] = defaultdict(list)
    kind_relatives: dict[str, list[torch.Tensor]] = defaultdict(list)
    for effect in log.effects:
        layer = effect.patch.site.layer
        if layer >= n_layers:
            raise ValueError(f"a patch at {effect.patch.site} lies beyond the model's {n_layers} layers")
        changed = effect.changed(rtol)
        changed_at_layer[layer] = changed_at_layer.get(layer, torch.zeros(tokens, dtype=torch.bool)) | changed
        delta, relative = effect.delta[changed], (effect.delta / effect.norm.clamp_min(1e-12))[changed]
        deltas.append(delta)
        relatives.append(relative)
        kinds[effect.patch.site.kind].append(delta)
        kind_relatives[effect.patch.site.kind].append(relative)
        total += effect.delta
    deltas_all, relatives_all = torch.cat(deltas), torch.cat(relatives)
    locations_changed = int(sum(int(mask.sum()) for mask in changed_at_layer.values()))

    def mean(values: torch.Tensor) -> float:
        return float(values.mean()) if values.numel() else 0.0

    return {
        "tokens": tokens,
        "sites": len(log.effects),
        "locations": n_layers * tokens,
        "locations_changed": locations_changed,
        "fraction_changed": locations_changed / max(n_layers * tokens, 1),
        "edits_changed": int(deltas_all.numel()),
        "mean_delta_norm": mean(deltas_all),
        "mean_relative_delta": mean(relatives_all),
        "delta_norm_per_token": mean(total),
        "by_kind": {
            kind: {
                "mean_delta_norm": mean(torch.cat(kinds[kind])),
                "mean_relative_delta": mean(torch.cat(kind_relatives[kind])),
            }
            for kind in kinds
        },
    }


def _aligned(log: EffectLog) -> int:
    counts = {effect.delta.numel() for effect in log.effects}
    if not log.effects or len(counts) != 1:
        raise ValueError("the EffectLog must hold patches that saw the same tokens (one patched call)")
    return counts.pop()


def per_token_delta_norms(log: EffectLog) -> torch.Tensor:
    """Σ over the recorded patches of ‖Δh‖, for each token seen: the size of the intervention a token receives
    (zero where no patch changed it)."""
    total = torch.zeros(_aligned(log))
    for effect in log.effects:
        total += effect.delta
    return total


def per_edit_delta_norms(log: EffectLog, rtol: float = 1e-6) -> torch.Tensor:
    """‖Δh‖ of every (site, token) edit that changed the activation (more than ``rtol``·‖h‖)."""
    _aligned(log)
    return torch.cat([effect.delta[effect.changed(rtol)] for effect in log.effects])
