"""`Patch`: an intervention at a site, restricted to some token positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool
from torch import Tensor

from flowsteer.patching.interventions import Activation, Context, Intervention, as_intervention
from flowsteer.sites import Site

PositionSpec = Literal["all", "prompt", "generated"] | Sequence[int] | slice


@dataclass(frozen=True)
class PositionRange:
    """Real token positions ``start <= p < stop`` (``stop=None``: no end), prompt and generated alike."""

    start: int = 0
    stop: int | None = None

    @classmethod
    def from_slice(cls, positions: slice) -> PositionRange:
        start, stop = positions.start or 0, positions.stop
        if positions.step not in (None, 1) or start < 0 or (stop is not None and stop <= start):
            raise ValueError(
                f"positions={positions!r} is not a valid range; use slice(start, stop) with 0 <= start < stop, "
                "e.g. slice(1, None) for every token but the first"
            )
        return cls(int(start), None if stop is None else int(stop))

    def mask(self, positions: Tensor) -> Bool[Tensor, "batch pos"]:
        inside = positions >= self.start
        return inside if self.stop is None else inside & (positions < self.stop)


@dataclass(frozen=True, init=False)
class Patch:
    """Apply ``intervention`` at ``site`` on the chosen token positions.

    Args:
        site: a `Site` or its text form (``"12/res"``, ``"blocks.12.hook_resid_post"``).
        intervention: an `Intervention`, or a callable ``(activation, context) -> activation``.
        positions: ``"all"`` (every column, the default), ``"prompt"`` (prompt tokens only),
            ``"generated"`` (generated tokens only) or explicit prompt positions: ``0`` is the
            first real prompt token, ``-1`` the last one (e.g. the post-instruction token).
            Explicit positions never match generated tokens. A ``slice(start, stop)`` selects real
            positions ``start <= p < stop`` counted from the first prompt token, generated tokens
            included: ``slice(1, None)`` is every token but the first (often an attention sink with
            an outsized norm).
    """

    site: Site
    intervention: Intervention
    positions: str | tuple[int, ...] | PositionRange = "all"

    def __init__(
        self,
        site: Site | str,
        intervention: Intervention | Callable[[Activation, Context], Activation],
        positions: PositionSpec = "all",
    ):
        object.__setattr__(self, "site", Site.parse(site))
        object.__setattr__(self, "intervention", as_intervention(intervention))
        if isinstance(positions, slice):
            positions = PositionRange.from_slice(positions)
        elif isinstance(positions, str):
            if positions not in ("all", "prompt", "generated"):
                raise ValueError(
                    f"positions={positions!r} is not valid; use 'all', 'prompt', 'generated' or a list "
                    "of prompt positions such as [-1]"
                )
        elif not isinstance(positions, PositionRange):
            positions = tuple(int(p) for p in positions)
            if not positions:
                raise ValueError("positions is an empty list; pass at least one position, or 'all'")
        object.__setattr__(self, "positions", positions)

    def mask(self, context: Context) -> Bool[Tensor, "batch pos"] | None:
        """The columns this patch edits in a forward chunk; None means all of them."""
        if isinstance(self.positions, str):
            if self.positions == "all":
                return None
            return context.in_prompt if self.positions == "prompt" else context.generated
        if isinstance(self.positions, PositionRange):
            return self.positions.mask(context.positions)
        lengths = context.prompt_lengths[:, None]
        targets = torch.tensor(self.positions, device=context.positions.device)
        targets = torch.where(targets < 0, lengths + targets, targets.expand(len(lengths), -1))
        valid = (targets >= 0) & (targets < lengths)
        if not bool(valid.all()):
            bad = sorted({p for p, ok in zip(self.positions, valid.all(0).tolist(), strict=True) if not ok})
            shortest = int(context.prompt_lengths.min())
            raise IndexError(
                f"patch at {self.site}: positions {bad} do not exist in a prompt of {shortest} tokens; "
                f"valid prompt positions are 0..{shortest - 1} or -{shortest}..-1"
            )
        return (context.positions[:, :, None] == targets[:, None, :]).any(-1)
