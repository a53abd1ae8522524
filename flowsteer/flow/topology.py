"""Where each SAE of a bank sits in the model's flow: residual stream positions and each residual site's
predecessor sites.

Everything in `flowsteer.flow` takes ``saes: Mapping[Site, SAE]`` (sae_lens SAE objects keyed by
site), so any bank works; ``flowsteer.saes.SAEBank`` reads one from disk.

Residual positions. The residual stream entering block L (``L/pre``) is the same activation as the
one leaving block L-1 (``(L-1)/res``). A residual feature's predecessors are the previous residual
position and the attention and MLP outputs of the block in between:

    L/res  <-  (L-1)/res (or L/pre),  L/att,  L/mlp
"""

from __future__ import annotations

from collections.abc import Mapping

from flowsteer.patching.features import check_sae
from flowsteer.sites import Site

PREDECESSORS = ("res", "mlp", "att")  # the papers' R (= R_{L-1}), M and A
MODULE_KINDS = {"mlp": "mlp_out", "att": "attn_out"}


def check_bank(saes: Mapping[Site, object], d_model: int | None = None) -> None:
    """All SAEs are usable (see `check_sae`) and share one input dimension (and the model's)."""
    if not saes:
        raise ValueError("the SAE bank is empty")
    dims = {site: sae.cfg.d_in for site, sae in saes.items()}
    for site, sae in saes.items():
        if not isinstance(site, Site):
            raise TypeError(f"SAE banks are keyed by Site, got {site!r}; use Site.parse({str(site)!r})")
        check_sae(sae, d_model)
    if len(set(dims.values())) > 1:
        raise ValueError(f"SAEs must share one d_in to be matched; got {dims}")


def stream_position(site: Site) -> int:
    """Index of a residual site in the stream: ``L/pre`` -> L, ``L/res`` -> L + 1."""
    if site.kind == "resid_pre":
        return site.layer
    if site.kind == "resid_post":
        return site.layer + 1
    raise ValueError(f"{site} is not a residual site (res or pre)")


def residual_sites(saes: Mapping[Site, object]) -> dict[int, Site]:
    """Residual SAE sites by stream position (``res`` preferred where ``pre`` is the same activation)."""
    found: dict[int, Site] = {}
    for site in sorted(saes):
        if site.kind in ("resid_pre", "resid_post"):
            position = stream_position(site)
            if position not in found or site.kind == "resid_post":
                found[position] = site
    return dict(sorted(found.items()))


def predecessor_sites(saes: Mapping[Site, object], site: Site) -> dict[str, Site]:
    """The sites of ``site``'s predecessors that have SAEs: keys among ``res``, ``mlp``, ``att``."""
    position = stream_position(site)
    if position == 0:
        return {}
    block = position - 1
    found = {}
    previous = residual_sites(saes).get(position - 1)
    if previous is not None:
        found["res"] = previous
    for key, kind in MODULE_KINDS.items():
        if Site(block, kind) in saes:
            found[key] = Site(block, kind)
    return found


def successor_site(saes: Mapping[Site, object], site: Site) -> Site | None:
    """The next residual site with an SAE (one block later), or None."""
    return residual_sites(saes).get(stream_position(site) + 1)


def scored_sites(saes: Mapping[Site, object]) -> list[Site]:
    """Residual sites with at least one predecessor SAE, in forward order."""
    return [site for site in residual_sites(saes).values() if predecessor_sites(saes, site)]
