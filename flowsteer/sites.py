"""Places in a model (`Site`) and SAE features at them (`FeatureId`).

A `Site` is a layer plus a kind of activation; it maps one-to-one onto a TransformerLens hook
name. The feature-flow papers write sites as ``12/res``, ``12/mlp``, ``12/att`` and features as
``12/res/345``; `Site.parse` / `FeatureId.parse` read that notation and `str()` writes it.

>>> Site.parse("12/res").hook_name
'blocks.12.hook_resid_post'
>>> str(FeatureId.parse("7/mlp/6110"))
'7/mlp/6110'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SiteKind = Literal["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]

# Kinds in the order a block computes them; sorting sites follows the forward pass.
KINDS: tuple[SiteKind, ...] = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")

SHORT_NAMES: dict[SiteKind, str] = {
    "resid_pre": "pre",
    "attn_out": "att",
    "resid_mid": "mid",
    "mlp_out": "mlp",
    "resid_post": "res",
}
_KIND_BY_NAME: dict[str, SiteKind] = {
    **{short: kind for kind, short in SHORT_NAMES.items()},
    **{kind: kind for kind in KINDS},
}
_HOOK_NAME = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|mlp_out|attn_out)$")


class SiteError(ValueError):
    """A site, feature or index that does not exist; the message names the valid range."""


def _kind(name: str) -> SiteKind:
    try:
        return _KIND_BY_NAME[name]
    except KeyError:
        valid = ", ".join(f"{short} ({kind})" for kind, short in SHORT_NAMES.items())
        raise SiteError(f"unknown site kind {name!r}; valid kinds: {valid}") from None


@dataclass(frozen=True, order=False)
class Site:
    """An activation site: ``layer`` (0-based block index) and ``kind``."""

    layer: int
    kind: SiteKind = "resid_post"

    def __post_init__(self) -> None:
        if not isinstance(self.layer, int) or isinstance(self.layer, bool) or self.layer < 0:
            raise SiteError(f"layer must be a non-negative integer, got {self.layer!r}")
        object.__setattr__(self, "kind", _kind(self.kind))

    @property
    def hook_name(self) -> str:
        """The TransformerLens hook name, e.g. ``blocks.12.hook_mlp_out``."""
        return f"blocks.{self.layer}.hook_{self.kind}"

    @property
    def short(self) -> str:
        """The papers' short kind name: ``res``, ``mlp``, ``att``, ``pre`` or ``mid``."""
        return SHORT_NAMES[self.kind]

    @property
    def order(self) -> tuple[int, int]:
        """Sort key following the forward pass (layer, then kind within the block)."""
        return (self.layer, KINDS.index(self.kind))

    def __lt__(self, other: Site) -> bool:
        return self.order < other.order

    def __str__(self) -> str:
        return f"{self.layer}/{self.short}"

    def validate(self, n_layers: int) -> Site:
        """Raise `SiteError` unless the layer exists in a model with ``n_layers`` blocks."""
        if self.layer >= n_layers:
            raise SiteError(
                f"site {self} is out of range: the model has {n_layers} layers, valid layers are "
                f"0..{n_layers - 1}"
            )
        return self

    @classmethod
    def parse(cls, text: str | Site) -> Site:
        """Read ``"12/res"``, ``"12/resid_post"`` or a hook name ``"blocks.12.hook_resid_post"``."""
        if isinstance(text, Site):
            return text
        text = text.strip()
        if text.startswith("blocks."):
            return cls.from_hook_name(text)
        parts = text.split("/")
        if len(parts) != 2 or not parts[0].isdigit():
            raise SiteError(f"cannot read site {text!r}; write it as LAYER/KIND, e.g. '12/res' or '3/mlp'")
        return cls(int(parts[0]), _kind(parts[1]))

    @classmethod
    def from_hook_name(cls, name: str) -> Site:
        """Inverse of `hook_name`."""
        match = _HOOK_NAME.match(name)
        if match is None:
            raise SiteError(
                f"{name!r} is not a site hook name; expected blocks.<layer>.hook_<kind> with kind one of "
                f"{', '.join(KINDS)}"
            )
        return cls(int(match.group(1)), match.group(2))  # type: ignore[arg-type]

    @classmethod
    def all(cls, n_layers: int, kinds: tuple[str, ...] = ("resid_post",)) -> list[Site]:
        """Every site of the given kinds in a model with ``n_layers`` blocks, in forward order."""
        return sorted(cls(layer, _kind(kind)) for layer in range(n_layers) for kind in kinds)


@dataclass(frozen=True)
class FeatureId:
    """One SAE feature: the site of its SAE and the latent ``index``; written ``12/res/345``."""

    site: Site
    index: int

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool) or self.index < 0:
            raise SiteError(f"feature index must be a non-negative integer, got {self.index!r}")

    @property
    def layer(self) -> int:
        return self.site.layer

    @property
    def kind(self) -> SiteKind:
        return self.site.kind

    def __str__(self) -> str:
        return f"{self.site}/{self.index}"

    def __lt__(self, other: FeatureId) -> bool:
        return (self.site.order, self.index) < (other.site.order, other.index)

    def validate(self, n_layers: int, d_sae: int) -> FeatureId:
        """Raise `SiteError` unless the layer exists and ``index < d_sae``."""
        self.site.validate(n_layers)
        if self.index >= d_sae:
            raise SiteError(
                f"feature {self} is out of range: the SAE at {self.site} has {d_sae} features, valid "
                f"indices are 0..{d_sae - 1}"
            )
        return self

    @classmethod
    def parse(cls, text: str | FeatureId) -> FeatureId:
        """Read ``"12/res/345"`` (also ``"12/resid_post/345"``)."""
        if isinstance(text, FeatureId):
            return text
        head, sep, index = text.strip().rpartition("/")
        if not sep or not index.isdigit():
            raise SiteError(f"cannot read feature {text!r}; write it as LAYER/KIND/INDEX, e.g. '12/res/345'")
        return cls(Site.parse(head), int(index))
