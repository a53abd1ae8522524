"""`FeatureSteerer`: steer a model by SAE features, turned into patches of the one patching API.

Three modes, each applied at every token (or the chosen ``positions``) of every site holding a
chosen feature, always as a *change* to the activation so the SAE's reconstruction error survives:

- ``add``: ``h + s u v`` (activation steering, Feature Flow App. B.2): s in feature units u
  (`flowsteer.steering.units`), v the decoder direction per unit activation;
- ``rescale``: ``h + (r - 1) a(h) v`` with a(h) the feature's activation from its SAE at that site
  (Feature Flow §4.2): r = 1 is the identity, r = 0 removes the feature, r < 0 flips it;
- ``clamp``: ``h + (c u - a(h)) v``: the activation set to c units (Templeton et al. 2024).

All features at one site become **one** patch (one hook, one edit): ``add`` sums the vectors into a
single `AddVector`, ``rescale``/``clamp`` encode the site's SAE once for all of its features.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from flowsteer.patching import AddVector, ClampFeatures, Generation, Patch, RescaleFeatures, generate_with_patches
from flowsteer.patching.features import decoder_directions
from flowsteer.patching.inputs import Inputs
from flowsteer.patching.patch import PositionSpec
from flowsteer.sites import FeatureId, Site
from flowsteer.steering.units import Units, feature_units

Mode = Literal["add", "rescale", "clamp"]
MODES: tuple[str, ...] = ("add", "rescale", "clamp")


class FeatureSteerer:
    """Steer by SAE features: ``features`` with one ``mode`` and a strength per feature.

    Args:
        saes: the SAEs by site (a `flowsteer.saes.SAEBank` or any ``Mapping[Site, SAE]``).
        features: feature ids (``"12/res/4111"`` or `FeatureId`).
        mode: ``"add"`` (s in feature units), ``"rescale"`` (factor r) or ``"clamp"`` (c in units).
        strength: one number for all features or one per feature.
        units: measured units per site (`typical_activations`) for ``add``/``clamp``; JumpReLU SAEs
            default to their thresholds. Not used by ``rescale``.
        positions: which tokens to edit (`Patch` positions; default every token).
    """

    def __init__(
        self,
        saes: Mapping[Site, nn.Module],
        features: Sequence[FeatureId | str],
        mode: Mode = "add",
        strength: float | Sequence[float] = 1.0,
        *,
        units: Units | None = None,
        positions: PositionSpec = "all",
    ):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; use one of {', '.join(MODES)}")
        self.features = [FeatureId.parse(f) if isinstance(f, str) else f for f in features]
        if not self.features:
            raise ValueError("FeatureSteerer needs at least one feature")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature is listed twice; give each feature once with its strength")
        strengths = [float(strength)] * len(self.features) if isinstance(strength, int | float) else list(strength)
        if len(strengths) != len(self.features):
            raise ValueError(f"{len(strengths)} strengths for {len(self.features)} features; give one or one each")
        self.strengths = [float(s) for s in strengths]
        for feature in self.features:
            if feature.site not in saes:
                raise KeyError(f"no SAE at {feature.site} for feature {feature}; the bank has {len(saes)} SAEs")
            d_sae = saes[feature.site].cfg.d_sae
            if feature.index >= d_sae:
                raise IndexError(f"feature {feature}: index must be below the SAE width {d_sae}")
        self.saes, self.mode, self.positions = saes, mode, positions
        self.units = dict(units) if units is not None else None

    def by_site(self) -> dict[Site, tuple[list[int], list[float]]]:
        """``{site: (feature indices, strengths)}`` in forward order."""
        grouped: dict[Site, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for feature, strength in zip(self.features, self.strengths, strict=True):
            grouped[feature.site][0].append(feature.index)
            grouped[feature.site][1].append(strength)
        return {site: grouped[site] for site in sorted(grouped)}

    def site_units(self, site: Site, indices: list[int]) -> Tensor:
        sae = self.saes[site]
        measured = None if self.units is None else self.units.get(site)
        if self.units is not None and measured is None:
            raise KeyError(f"units were given but none for {site}; measure them for every steered site")
        return feature_units(sae, measured)[torch.tensor(indices)]

    def patches(self) -> list[Patch]:
        """One patch per site, in forward order."""
        patches = []
        for site, (indices, strengths) in self.by_site().items():
            sae = self.saes[site]
            values = torch.tensor(strengths)
            if self.mode == "rescale":
                intervention = RescaleFeatures(sae, indices, values)
            else:
                values = values * self.site_units(site, indices)
                if self.mode == "clamp":
                    intervention = ClampFeatures(sae, indices, values)
                else:
                    vector = values.to(sae.W_dec) @ decoder_directions(sae, indices)
                    intervention = AddVector(vector.detach())
            patches.append(Patch(site, intervention, self.positions))
        return patches

    def generate(self, model: HookedTransformer, prompts: Inputs, **options) -> Generation:
        """`generate_with_patches` with this steerer's patches (options as there)."""
        return generate_with_patches(model, prompts, self.patches(), **options)

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return (
            f"FeatureSteerer(mode={self.mode!r}, features={len(self.features)}, sites={len(self.by_site())}, "
            f"strength={min(self.strengths):.3g}..{max(self.strengths):.3g})"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(str(f))}</td><td>{s:.3g}</td></tr>"
            for f, s in zip(self.features, self.strengths, strict=True)
        )
        return (
            f"<p>FeatureSteerer: mode <b>{self.mode}</b>, {len(self.features)} features at "
            f"{len(self.by_site())} sites</p><table><tr><th>feature</th><th>strength</th></tr>{rows}</table>"
        )
