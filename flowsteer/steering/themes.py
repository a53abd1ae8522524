"""Choosing features for a theme without Neuronpedia: standardised mean difference of activations.

Each text's activation of a feature is its maximum (or mean, ``reduce="mean"``) over the text's
tokens (the first token, an attention sink, skipped): the maximum finds features that mark the
theme's words wherever they occur, the mean favours features active throughout. A feature's score for a theme is

    d = (mean_on - mean_off) / sqrt((var_on + var_off) / 2)

over on-theme and off-theme texts (Cohen's d; CircuitSteer uses the same contrast to pick seeds).
Ranked features carry labels: their top promoted tokens (decoder direction through the final norm
and the unembedding) and the on-theme text where they fire most, the token marked ``⟦…⟧``.

Theme texts live in ``data/themes/<theme>.txt`` (one text a line, written for this project);
``neutral.txt`` holds off-theme everyday texts.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from transformer_lens import HookedTransformer

from flowsteer.evals.lens import logit_lens
from flowsteer.patching import cache_sites
from flowsteer.patching.features import decoder_directions
from flowsteer.patching.inputs import encode
from flowsteer.resources import data_path
from flowsteer.sites import FeatureId, Site

NEUTRAL = "neutral"


def load_themes(directory: str | Path | None = None) -> dict[str, list[str]]:
    """``{theme: texts}`` from ``<directory>/<theme>.txt`` (one text a line), ``neutral`` included; default the
    shipped ``themes/`` (`flowsteer.resources.data_path`)."""
    directory = Path(directory) if directory is not None else data_path("themes")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no theme texts in {directory}; write one <theme>.txt per theme, one text a line")
    return {f.stem: [line.strip() for line in f.read_text().splitlines() if line.strip()] for f in files}


@dataclass(frozen=True)
class RankedFeature:
    feature: FeatureId
    smd: float
    mean_on: float
    mean_off: float
    tokens: tuple[str, ...] = ()
    context: str = ""


class ThemeFeatures(list[RankedFeature]):
    """Ranked features of one theme (best first), shown as a table in notebooks."""

    def __init__(self, theme: str, rows: Sequence[RankedFeature]):
        super().__init__(rows)
        self.theme = theme

    def ids(self) -> list[FeatureId]:
        return [row.feature for row in self]

    def markdown(self) -> str:
        lines = [
            f"| feature | d | mean on | mean off | promoted tokens | top {self.theme} context |",
            "|---|---|---|---|---|---|",
        ]
        for r in self:
            tokens = ", ".join(repr(t)[1:-1] for t in r.tokens).replace("|", "\\|")
            lines.append(
                f"| {r.feature} | {r.smd:.2f} | {r.mean_on:.3g} | {r.mean_off:.3g} | {tokens} | "
                f"{r.context.replace('|', '/')} |"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("feature", "d", "mean on", "mean off", "tokens", "context"))
        body = "".join(
            f"<tr><td>{r.feature}</td><td>{r.smd:.2f}</td><td>{r.mean_on:.3g}</td><td>{r.mean_off:.3g}</td>"
            f"<td>{html.escape(', '.join(r.tokens))}</td><td>{html.escape(r.context)}</td></tr>"
            for r in self
        )
        return f"<p>features of theme <b>{html.escape(self.theme)}</b></p><table><tr>{head}</tr>{body}</table>"


@torch.no_grad()
def text_activations(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    texts: Sequence[str],
    batch_size: int = 16,
    reduce: Literal["max", "mean"] = "max",
) -> tuple[dict[Site, Tensor], dict[Site, Tensor], list[Tensor]]:
    """Per text and feature: max (or mean) activation over tokens, argmax token; each text's tokens."""
    sites = sorted(saes)
    means: dict[Site, list[Tensor]] = {s: [] for s in sites}
    peaks: dict[Site, list[Tensor]] = {s: [] for s in sites}
    tokens: list[Tensor] = []
    for batch in encode(model, list(texts)).split(batch_size):
        acts = cache_sites(model, batch, sites)
        keep = (batch.positions >= 1).to(model.cfg.device)  # skip padding and the attention sink
        tokens += [row[mask.bool().cpu()] for row, mask in zip(batch.tokens.cpu(), batch.attention_mask, strict=True)]
        for site in sites:
            sae = saes[site]
            feats = sae.encode(acts[site].to(sae.W_dec)) * keep[..., None]
            value = feats.amax(1) if reduce == "max" else feats.sum(1) / keep.sum(1, keepdim=True)
            means[site].append(value.float().cpu())
            peak_col = feats.argmax(1).cpu()  # [b, F] column of the peak
            pad = (batch.attention_mask == 0).sum(1, keepdim=True).cpu()
            peaks[site].append(peak_col - pad)
        del acts
    return (
        {s: torch.cat(v) for s, v in means.items()},
        {s: torch.cat(v) for s, v in peaks.items()},
        tokens,
    )


def standardised_mean_difference(on: Tensor, off: Tensor, eps: float = 1e-6) -> Tensor:
    """Cohen's d per column of ``[texts, features]`` activations."""
    pooled = ((on.var(0, unbiased=True) + off.var(0, unbiased=True)) / 2).sqrt()
    return (on.mean(0) - off.mean(0)) / (pooled + eps)


def promoted(model: HookedTransformer, sae: nn.Module, indices: Sequence[int], n: int = 6) -> list[list[str]]:
    """The ``n`` tokens each feature's decoder direction promotes most (`flowsteer.evals.logit_lens`)."""
    ids, _ = logit_lens(model, decoder_directions(sae, list(indices)), n)
    return [[model.tokenizer.decode([i]) for i in row] for row in ids.tolist()]


def rank_theme_features(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    on_texts: Sequence[str],
    off_texts: Sequence[str],
    *,
    theme: str = "theme",
    top: int = 20,
    min_active: float = 0.25,
    reduce: Literal["max", "mean"] = "max",
) -> ThemeFeatures:
    """The ``top`` features by standardised mean difference, on-theme vs off-theme texts.

    Features active in fewer than ``min_active`` of the on-theme texts are skipped: a large d from
    two or three texts is a rare-word detector, not a theme.
    """
    if len(on_texts) < 2 or len(off_texts) < 2:
        raise ValueError("rank_theme_features needs at least 2 on-theme and 2 off-theme texts")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce={reduce!r}; use 'max' or 'mean'")
    activations = text_activations(model, saes, list(on_texts) + list(off_texts), reduce=reduce)
    on = torch.arange(len(on_texts) + len(off_texts)) < len(on_texts)
    return _rank(model, saes, activations, on, theme, top, min_active)


def rank_themes(
    model: HookedTransformer,
    saes: Mapping[Site, nn.Module],
    themes: Mapping[str, Sequence[str]],
    *,
    top: int = 20,
    min_active: float = 0.25,
    reduce: Literal["max", "mean"] = "max",
) -> dict[str, ThemeFeatures]:
    """`rank_theme_features` for every theme but ``neutral`` against all other texts, from one pass."""
    names = list(themes)
    texts = [t for name in names for t in themes[name]]
    owner = torch.tensor([i for i, name in enumerate(names) for _ in themes[name]])
    activations = text_activations(model, saes, texts, reduce=reduce)
    return {
        name: _rank(model, saes, activations, owner == i, name, top, min_active)
        for i, name in enumerate(names)
        if name != NEUTRAL
    }


def _rank(model, saes, activations, on: Tensor, theme: str, top: int, min_active: float) -> ThemeFeatures:
    values, peaks, tokens = activations
    candidates: list[tuple[float, Site, int]] = []
    for site, acts in values.items():
        smd = standardised_mean_difference(acts[on], acts[~on])
        smd[(acts[on] > 0).float().mean(0) < min_active] = -torch.inf
        best = smd.topk(min(top, len(smd)))
        candidates += [(v, site, i) for v, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)]
    candidates = sorted((c for c in candidates if c[0] > -torch.inf), key=lambda c: -c[0])[:top]
    on_rows = on.nonzero().flatten()
    rows = []
    for value, site, index in candidates:
        acts = values[site][:, index]
        text = int(on_rows[acts[on].argmax()])
        column = int(peaks[site][text, index])
        words = [model.tokenizer.decode([t]) for t in tokens[text].tolist()]
        lo = max(0, column - 8)
        context = "".join(words[lo:column]) + "⟦" + words[column] + "⟧" + "".join(words[column + 1 : column + 3])
        rows.append(
            RankedFeature(
                FeatureId(site, index),
                value,
                float(acts[on].mean()),
                float(acts[~on].mean()),
                tuple(promoted(model, saes[site], [index])[0]),
                context.strip(),
            )
        )
    return ThemeFeatures(theme, rows)
