"""Disjoint data for a steering comparison: what builds the steering, what trains the scorer, what is steered.

- **Theme texts** (``data/themes``, every theme and ``neutral``) are split per class into a ``rank`` part, which
  ranks SAE features and builds the difference-in-means (ActAdd) vector, and a ``score`` part, which trains the
  theme classifier that scores the outputs. No text is in both: the scorer never saw the texts that chose the
  features (or the vector) it rewards.
- **Prompts** (``data/steering/prompts.txt``, neutral sentence openings) are split into ``val`` (settings are chosen
  there) and ``test`` (the chosen setting is reported there once, with a fresh seed).

Splits are seeded permutations, so a run is reproducible and a different ``seed`` gives another split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flowsteer.resources import data_path


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def load_prompts(path: str | Path | None = None) -> list[str]:
    """The steering prompts, one a line (default the shipped ``steering/prompts.txt``)."""
    path = Path(path) if path is not None else data_path("steering", "prompts.txt")
    prompts = [line.rstrip() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(set(prompts)) != len(prompts):
        raise ValueError(f"{path} lists a prompt twice; every prompt must be in one split only")
    return prompts


@dataclass(frozen=True)
class SteeringSplits:
    """Theme texts for building the steering (``rank``) and for training the scorer (``score``), and the prompts
    that choose settings (``val``) and report them (``test``). `check` raises if any two parts share an item."""

    rank: dict[str, list[str]]
    score: dict[str, list[str]]
    val: list[str]
    test: list[str]

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if sorted(self.rank) != sorted(self.score):
            raise ValueError(f"the rank and score parts have different classes: {sorted(self.rank)} vs "
                             f"{sorted(self.score)}")
        rank = {t for texts in self.rank.values() for t in texts}
        score = {t for texts in self.score.values() for t in texts}
        shared = rank & score
        if shared:
            raise ValueError(f"{len(shared)} theme text(s) are both in the rank and the score part, e.g. "
                             f"{next(iter(shared))!r}: the scorer would be trained on what chose the steering")
        if set(self.val) & set(self.test):
            raise ValueError(f"prompts in both val and test: {sorted(set(self.val) & set(self.test))}")
        if not self.val or not self.test:
            raise ValueError("val and test need at least one prompt each")
        if (rank | score) & (set(self.val) | set(self.test)):
            raise ValueError("a prompt is also a theme text")

    def sizes(self) -> dict:
        return {"rank": {c: len(t) for c, t in self.rank.items()}, "score": {c: len(t) for c, t in self.score.items()},
                "val_prompts": len(self.val), "test_prompts": len(self.test)}


def split_texts(
    texts_by_class: Mapping[str, Sequence[str]], fraction: float = 0.5, seed: int = 0
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Each class's texts into (``rank``, ``score``): a seeded ``fraction`` of them (at least 2) to ``rank``, the rest
    (at least 2) to ``score``. Duplicated texts are dropped first, so no text can land in both."""
    rank, score = {}, {}
    for i, name in enumerate(sorted(texts_by_class)):
        texts = list(dict.fromkeys(texts_by_class[name]))
        if len(texts) < 4:
            raise ValueError(f"class {name!r} has {len(texts)} distinct texts; a split needs at least 4")
        cut = min(max(2, round(fraction * len(texts))), len(texts) - 2)
        order = _permutation(len(texts), seed * 1_000 + i)
        rank[name] = [texts[j] for j in sorted(order[:cut])]
        score[name] = [texts[j] for j in sorted(order[cut:])]
    return rank, score


def split_prompts(prompts: Sequence[str], n_val: int, n_test: int | None = None, seed: int = 0) -> tuple[list, list]:
    """A seeded (``val``, ``test``) split of distinct prompts: ``n_val`` and ``n_test`` (default: the rest)."""
    prompts = list(dict.fromkeys(prompts))
    n_test = len(prompts) - n_val if n_test is None else n_test
    if n_val < 1 or n_test < 1 or n_val + n_test > len(prompts):
        raise ValueError(f"cannot take {n_val} val and {n_test} test prompts from {len(prompts)} distinct prompts")
    order = _permutation(len(prompts), seed)
    return [prompts[j] for j in order[:n_val]], [prompts[j] for j in order[n_val : n_val + n_test]]


def steering_splits(
    themes: Mapping[str, Sequence[str]],
    prompts: Sequence[str],
    *,
    n_val: int,
    n_test: int | None = None,
    fraction: float = 0.5,
    seed: int = 0,
) -> SteeringSplits:
    """`split_texts` of the theme texts and `split_prompts` of the prompts, checked disjoint."""
    rank, score = split_texts(themes, fraction, seed)
    val, test = split_prompts(prompts, n_val, n_test, seed)
    return SteeringSplits(rank, score, val, test)
