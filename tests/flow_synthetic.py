"""Small sae_lens SAEs with planted or random weights for the feature-flow tests."""

from __future__ import annotations

from pathlib import Path

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

from flowsteer.sites import Site

D = 64  # the tiny model's d_model


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def topk_sae(directions: torch.Tensor, k: int = 8, site: Site | None = None) -> TopKSAE:
    """A TopK SAE whose decoder rows are ``directions`` [F, d] and whose encoder is their transpose."""
    n, d = directions.shape
    sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=n, k=k))
    with torch.no_grad():
        sae.W_dec.copy_(directions)
        sae.W_enc.copy_(directions.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    if site is not None:
        sae.cfg.metadata.hook_name = site.hook_name
    return sae.eval()


def jumprelu_sae(d: int = D, n: int = 96, seed: int = 0) -> JumpReLUSAE:
    """A JumpReLU SAE with random weights, biases and positive thresholds."""
    gen = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=n))
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(n, d, generator=gen) * 0.3)
        sae.W_enc.copy_(torch.randn(d, n, generator=gen) * 0.3)
        sae.b_enc.copy_(torch.randn(n, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(d, generator=gen) * 0.1)
        sae.threshold.copy_(torch.rand(n, generator=gen) * 0.5 + 0.05)
    return sae.eval()


def complement_directions(basis: torch.Tensor, n: int, planted: int, seed: int) -> torch.Tensor:
    """``n`` random unit vectors orthogonal to the first ``planted`` columns of the orthonormal ``basis``."""
    gen = torch.Generator().manual_seed(seed)
    rest = basis[:, planted:]
    return unit(torch.randn(n, rest.shape[1], generator=gen) @ rest.T)


def planted_chain_bank(n: int = 128, k: int = 8) -> tuple[dict[Site, TopKSAE], torch.Tensor]:
    """SAEs at res/mlp/att of layers 0-3 with a planted chain (all other features orthogonal to it):

    3/res/5 = u0;  2/res/7 = u0 + 0.3 u1 (cos 0.958);  1/res/9 = 0.3 u0 + u3 (cos 0.275 with 2/res/7:
    the chain is cut there);  3/mlp/11 = u0 + u4 (cos 0.707: kept);  3/att/13 = 0.1 u0 + u5 (cos 0.0995:
    dropped at 0.15). Returns the bank and the orthonormal basis (columns u0, u1, ...).
    """
    basis, _ = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(123)))
    u = basis.T
    planted = {
        Site(3, "resid_post"): {5: u[0]},
        Site(2, "resid_post"): {7: u[0] + 0.3 * u[1]},
        Site(1, "resid_post"): {9: 0.3 * u[0] + u[3]},
        Site(3, "mlp_out"): {11: u[0] + u[4]},
        Site(3, "attn_out"): {13: 0.1 * u[0] + u[5]},
    }
    bank = {}
    for i, site in enumerate(Site.all(4, ("resid_post", "mlp_out", "attn_out"))):
        directions = complement_directions(basis, n, 8, seed=i)
        for index, vector in planted.get(site, {}).items():
            directions[index] = unit(vector)
        bank[site] = topk_sae(directions, k, site)
    return bank, basis


def persistent_bank(
    n_layers: int = 4, n: int = 128, k: int = 8, seed: int = 0, noise: float = 0.25
) -> dict[Site, TopKSAE]:
    """Random TopK SAEs at res/mlp/att of every layer in which half of each residual SAE's features
    persist from the previous layer (shuffled, with noise) and a quarter resemble MLP features."""
    gen = torch.Generator().manual_seed(seed)
    bank: dict[Site, TopKSAE] = {}
    previous = unit(torch.randn(n, D, generator=gen))
    for layer in range(n_layers):
        mlp = unit(torch.randn(n, D, generator=gen))
        att = unit(torch.randn(n, D, generator=gen))
        res = unit(torch.randn(n, D, generator=gen))
        keep = torch.randperm(n, generator=gen)[: n // 2]
        res[: n // 2] = unit(previous[keep] + noise * torch.randn(n // 2, D, generator=gen))
        res[n // 2 : 3 * n // 4] = unit(mlp[: n // 4] + noise * torch.randn(n // 4, D, generator=gen))
        res = res[torch.randperm(n, generator=gen)]
        for kind, directions in (("resid_post", res), ("mlp_out", mlp), ("attn_out", att)):
            site = Site(layer, kind)
            bank[site] = topk_sae(directions, k, site)
        previous = res
    return bank


def save_bank(bank: dict[Site, object], folder: Path) -> Path:
    """Write ``bank`` as SAELens folders (one per site, named like ``3-res``)."""
    for site, sae in bank.items():
        sae.save_model(folder / f"{site.layer}-{site.short}")
    return folder
