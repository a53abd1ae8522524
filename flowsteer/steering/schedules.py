"""How one steering coefficient is spread over layers (Feature Flow App. B.2).

A schedule maps the base strength s and a feature's layer l to that feature's strength s'(l),
given the graph's similarity span [l_start, l_end]:

- `Constant`: s' = s;
- `Linear`: s' = k l + b through (l_start, s) and (l_end, s*), k = (s* - s) / (l_end - l_start);
- `Exponential`: s' = s e^{α l} (l the absolute layer, as in the paper).

The paper's values: α = -0.05 and s* = 1, chosen by inspecting a few completions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Constant:
    """s' = s at every layer."""

    name = "constant"

    def __call__(self, strength: float, layer: int, span: tuple[int, int]) -> float:
        return strength


@dataclass(frozen=True)
class Linear:
    """s' interpolates linearly from s at the span's first layer to ``end`` (s*) at its last."""

    end: float = 1.0
    name = "linear"

    def __call__(self, strength: float, layer: int, span: tuple[int, int]) -> float:
        start, stop = span
        if stop == start:
            return strength
        slope = (self.end - strength) / (stop - start)
        return strength + slope * (layer - start)


@dataclass(frozen=True)
class Exponential:
    """s' = s e^{α l}."""

    alpha: float = -0.05
    name = "exponential"

    def __call__(self, strength: float, layer: int, span: tuple[int, int]) -> float:
        return strength * math.exp(self.alpha * layer)


Schedule = Constant | Linear | Exponential
SCHEDULES: dict[str, type] = {"constant": Constant, "linear": Linear, "exponential": Exponential}
