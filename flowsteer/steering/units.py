"""Feature units: a steering coefficient counted in a feature's own typical activation.

Adding ``s * v_i`` with ``v_i`` the decoder direction per unit activation means something different
for every feature: one feature's usual activation is 0.5, another's 40. Steering coefficients in
flowsteer are therefore given in each feature's **unit** ``u_i``, and the edit adds ``s * u_i * v_i``:

- **JumpReLU** SAEs: ``u_i`` = the threshold θ_i. This is SAE Match's folding (W_dec' = diag(θ) W_dec),
  the reading of Feature Flow App. B.2's "folding to incorporate typical activation levels".
- **TopK / ReLU** SAEs have no threshold: ``u_i`` = the feature's mean non-zero activation measured
  on the project corpus (`typical_activations`, cached per SAE bank). Mean activation sits above the
  smallest activation a JumpReLU threshold marks, so one unit here is a somewhat stronger push than
  one threshold unit; coefficients are not interchangeable between the two kinds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from flowsteer.flow.folding import activation_scales, is_jumprelu
from flowsteer.flow.labels import sae_fingerprint
from flowsteer.patching import cache_sites
from flowsteer.paths import atomic_path, cache_dir, read_safetensors
from flowsteer.sites import Site

Units = Mapping[Site, Float[Tensor, " d_sae"]]


def feature_units(sae: nn.Module, measured: Tensor | None = None) -> Float[Tensor, " d_sae"]:
    """One SAE's feature units: ``measured`` (e.g. from `typical_activations`) if given, else a
    JumpReLU SAE's thresholds; other SAEs without measured units raise."""
    if measured is not None:
        measured = torch.as_tensor(measured, dtype=torch.float32)
        if measured.shape != (sae.cfg.d_sae,) or not bool((measured > 0).all()):
            raise ValueError(f"units must be {sae.cfg.d_sae} positive numbers, one per feature")
        return measured
    if is_jumprelu(sae):
        theta = sae.threshold.detach().float().cpu()
        return torch.where(theta > 0, theta, torch.ones_like(theta))
    raise ValueError(
        f"{type(sae).__name__} has no thresholds to fold: measure its features' typical activations with "
        "flowsteer.steering.typical_activations(model, saes) and pass them as units"
    )


def _cache_key(site: Site, sae: nn.Module, tokens: int, context: int) -> str:
    return hashlib.sha256(f"{tokens}|{context}|{site}|{sae_fingerprint(sae)}".encode()).hexdigest()[:16]


@torch.no_grad()
def typical_activations(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    *,
    tokens: int = 8_192,
    context: int = 128,
    batch_size: int = 8,
    cache: bool = True,
) -> dict[Site, Float[Tensor, " d_sae"]]:
    """Mean non-zero activation of every feature of every SAE on ``tokens`` tokens of the corpus's
    eval split (chunks of ``context``; each chunk's first token, an attention sink, is skipped).

    Features that never fire get the median of the others. Cached per SAE under
    ``cache_dir("steering", "units")`` by its weights, site and these settings, so any subset of a
    bank reuses what was measured before; only missing sites are measured (one pass for all).
    """
    from flowsteer.data import token_chunks

    folder = cache_dir("steering", "units")
    paths = {site: folder / f"{_cache_key(site, saes[site], tokens, context)}.safetensors" for site in saes}
    fix = "delete this cache file: the units are then measured again"
    units = {site: read_safetensors(path, fix)["units"] for site, path in paths.items() if cache and path.is_file()}
    missing = sorted(site for site in saes if site not in units)
    if not missing:
        return {site: units[site] for site in sorted(saes)}
    chunks = token_chunks(model.tokenizer, "eval", context)[: max(1, tokens // context)]
    collected: dict[Site, list[Tensor]] = {site: [] for site in missing}
    for batch in chunks.to(model.cfg.device).split(batch_size):
        acts = cache_sites(model, batch, missing)
        for site in missing:
            collected[site].append(acts[site][:, 1:].detach())
        del acts
    for site in missing:
        units[site] = activation_scales(saes[site], collected[site])
        if cache:
            with atomic_path(paths[site]) as tmp:
                save_file({"units": units[site].contiguous()}, tmp)
    return {site: units[site] for site in sorted(saes)}
