"""Causal deactivation of predecessors (Feature Flow, arXiv 2502.03032, §5.2, App. A.2, Table 1).

For a residual feature active at a token (the target), its matched predecessors that are active at
the same token are rescaled with h <- h + (r - 1)·a·v (`RescaleFeatures`, r = 0 removes them) at
their own sites and only at that token; then the target's activation z is read again.

Protocol: ``tokens_per_text`` random tokens per text (first token skipped), at each layer up to
``max_targets`` active target features sampled among those with an active top-1 predecessor (the
"From nowhere" ones are excluded, as in the paper). Every strategy (`groups.DEACTIVATION_STRATEGIES`)
gets a `Record` for every sampled target, also when it finds no active predecessor (then it edits nothing
and z_new = z_old), so all strategies are summarized on one set of targets
(`flowsteer.flow.deactivation_summary`).

The first ``search_targets`` targets of each layer and token also get two searches
(`flowsteer.flow.subsets`), recorded as strategies:

- ``greedy``: every active feature of each predecessor site removed alone; per site the one that lowers
  the target most is kept, and the kept ones (at most one per site) are removed together;
- ``exhaustive``: every non-empty subset of at most ``max_subset`` features of the pool (the active
  features among each predecessor site's ``top_m`` matches of the target) is removed; the subset with the
  lowest z_new is kept. Exhaustive over that space only; ``pool`` and ``tried`` are on its record.

Each text's tokens are cut after the edited token and only the block that computes the target
runs (`run_from_layer`), with all edits of one token batched as rows. The r sweep (`rescale_sweep`)
rescales all active top-1 predecessors by each r and also reports the relative change of the
next-token loss over the ``horizon`` tokens from the edited one on, (L_new - L_old) / L_old.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.evals.capability import token_nll
from flowsteer.flow.groups import BITS, DEACTIVATION_STRATEGIES, GROUP_OF_BITS, GROUPS, candidates
from flowsteer.flow.scores import LayerScores
from flowsteer.flow.subsets import Edit, SearchResult, exhaustive_search, greedy_search
from flowsteer.flow.tokens import Corpus, sample_positions, token_batches
from flowsteer.flow.topology import stream_position
from flowsteer.patching import Patch, TokenBatch, cache_sites
from flowsteer.patching.features import RescaleFeatures
from flowsteer.patching.run import run_from_layer
from flowsteer.sites import Site

SEARCHES = ("greedy", "exhaustive")


@dataclass
class Record:
    """One target feature under one strategy (or one r of the sweep)."""

    site: str
    feature: int
    text: int
    position: int
    group: str  # under top-1 matching
    strategy: str
    edited: int  # predecessor features rescaled (0: none active; the target stays as it was)
    r: float
    z_old: float
    z_new: float
    loss_old: float | None = None
    loss_new: float | None = None
    pool: int = 0  # searches: candidate features (exhaustive: its pool; greedy: active features tried)
    tried: int = 0  # searches: edits evaluated

    @property
    def key(self) -> tuple[str, int, int, int]:
        """The (target, token): site, feature, text, position."""
        return (self.site, self.feature, self.text, self.position)

    @property
    def deactivated(self) -> bool:
        return self.z_new <= 0

    @property
    def activation_change(self) -> float:
        return 1.0 - self.z_new / self.z_old


def _start_block(site: Site) -> int:
    return stream_position(site) - 1


def rescale_patches(
    saes: Mapping[Site, object], rows: Sequence[tuple[Edit, float]], position: int, start: int
) -> list[Patch]:
    """One `RescaleFeatures` patch per site for a batch whose row i applies ``rows[i]`` = (edit, r) at
    ``position``; a site before block ``start`` (the previous residual) is patched as ``start/pre``."""
    sites = sorted({site for edit, _ in rows for site in edit})
    patches = []
    for site in sites:
        features = sorted({f for edit, _ in rows for f in edit.get(site, [])})
        column = {f: i for i, f in enumerate(features)}
        factor = torch.ones(len(rows), len(features))
        for i, (edit, r) in enumerate(rows):
            for f in edit.get(site, []):
                factor[i, column[f]] = r
        where = Site(start, "resid_pre") if site.order < Site(start, "resid_pre").order else site
        patches.append(Patch(where, RescaleFeatures(saes[site], features, factor), [position]))
    return patches


@torch.no_grad()
def _run_rows(model, saes, tokens, resid_pre, site, start, position, rows, *, logits: bool = False):
    """Target-site feature activations at ``position`` (and logits if asked) for each edited row."""
    n = len(rows)
    batch = TokenBatch(tokens.expand(n, -1), torch.ones(n, tokens.shape[1], dtype=torch.long))
    out, acts = run_from_layer(
        model,
        batch,
        resid_pre.expand(n, -1, -1),
        start,
        rescale_patches(saes, rows, position, start),
        cache=[site],
        stop_at_layer=None if logits else start + 1,
    )
    encoded = saes[site].encode(acts[site][:, position].to(saes[site].W_dec)).cpu()
    return encoded, (out if logits else None)


def _active(acts: dict[str, torch.Tensor], layer: LayerScores, target: int, strategy: str, gen) -> Edit:
    edit: Edit = {}
    for key, pred in layer.predecessors.items():
        cands = candidates(layer, key, torch.tensor([target]), strategy, gen)[0]
        on = [int(j) for j in cands.tolist() if j >= 0 and acts[key][j] > 0]
        if on:
            edit[pred] = sorted(set(on))
    return edit


def _top1_group(acts, layer, target, gen) -> int:
    edit = _active(acts, layer, target, "top1", gen)
    bits = sum(BITS[key] for key, pred in layer.predecessors.items() if pred in edit)
    return int(GROUP_OF_BITS[bits])


def _targets(z, acts, layer, max_targets, gen) -> list[tuple[int, int]]:
    """(feature, top-1 group) of up to ``max_targets`` active features that are not "From nowhere"."""
    active = z.nonzero().flatten()
    active = active[torch.randperm(len(active), generator=gen)].tolist()
    chosen = []
    for feature in active:
        group = _top1_group(acts, layer, feature, gen)
        if group != 0:
            chosen.append((feature, group))
        if len(chosen) == max_targets:
            break
    return chosen


def _texts(model, corpus, max_tokens):
    for i, batch in enumerate(token_batches(model, corpus, batch_size=1, max_tokens=max_tokens)):
        yield i, batch.tokens[:, batch.attention_mask[0].bool()]


def _pool(acts: dict[str, torch.Tensor], layer: LayerScores, target: int, top_m: int) -> list[tuple[Site, int]]:
    """Active features among each predecessor site's ``top_m`` matches of ``target``."""
    pool = []
    for key, pred in layer.predecessors.items():
        top = layer.matches[key].indices
        if top.shape[1] < top_m:
            raise ValueError(f"the exhaustive pool needs layer scores with k >= {top_m}, got k = {top.shape[1]}")
        pool += [(pred, int(j)) for j in top[target, :top_m].tolist() if j >= 0 and acts[key][j] > 0]
    return sorted(set(pool))


@torch.no_grad()
def deactivation_records(
    model: HookedTransformer,
    saes: Mapping[Site, object],
    scores: Mapping[Site, LayerScores],
    corpus: Corpus,
    *,
    strategies: Sequence[str] = DEACTIVATION_STRATEGIES,
    r: float = 0.0,
    tokens_per_text: int = 5,
    max_targets: int = 25,
    search_targets: int = 0,
    top_m: int = 5,
    max_subset: int = 3,
    max_tokens: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> list[Record]:
    """Table-1 experiment: a `Record` per sampled target and strategy (see the module docstring; a tqdm bar over
    the texts unless ``progress=False``).

    ``scores``: `layer_scores` of the target layers with k >= 5 and >= ``top_m`` (and `add_permutations`
    when ``permutation`` is among the strategies). ``search_targets``: targets per layer and token that
    also get the ``greedy`` and ``exhaustive`` searches (0 = none); ``top_m`` and ``max_subset`` define
    the exhaustive search's space.
    """
    for strategy in strategies:
        if strategy not in DEACTIVATION_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; use {', '.join(DEACTIVATION_STRATEGIES)}")
    gen = torch.Generator().manual_seed(seed)
    records: list[Record] = []
    sites = sorted(
        {s for layer in scores.values() for s in [layer.site, *layer.predecessors.values()]}
        | {Site(_start_block(site), "resid_pre") for site in scores}
    )
    for text, tokens in tqdm(_texts(model, corpus, max_tokens), desc="deactivation", unit="text", leave=False,
                             disable=not progress):
        clean = cache_sites(model, tokens, sites)
        for _, position in sample_positions(TokenBatch(tokens, torch.ones_like(tokens)), tokens_per_text, gen):
            for site, layer in scores.items():
                start = _start_block(site)
                encode = {
                    s: saes[s].encode(clean[s][0, position].to(saes[s].W_dec)).cpu()
                    for s in [site, *layer.predecessors.values()]
                }
                z = encode[site]
                acts = {key: encode[pred] for key, pred in layer.predecessors.items()}
                args = (tokens[:, : position + 1], clean[Site(start, "resid_pre")][:, : position + 1])
                rows, meta = [], []
                for number, (feature, group) in enumerate(_targets(z, acts, layer, max_targets, gen)):
                    base = Record(str(site), feature, text, position, GROUPS[group], "", 0, r, float(z[feature]), 0.0)
                    for strategy in strategies:
                        edit = _active(acts, layer, feature, strategy, gen)
                        record = replace(base, strategy=strategy, edited=sum(map(len, edit.values())))
                        records.append(record)
                        if edit:
                            rows.append((edit, r))
                            meta.append(record)
                        else:
                            record.z_new = record.z_old
                    if number < search_targets:
                        evaluate = target_evaluator(model, saes, *args, site, position, feature, r)
                        per_site = {pred: acts[key].nonzero().flatten().tolist() for key, pred in
                                    layer.predecessors.items()}
                        pool = _pool(acts, layer, feature, top_m)
                        greedy = greedy_search(per_site, evaluate, base.z_old)
                        exhaustive = exhaustive_search(pool, evaluate, base.z_old, max_size=max_subset)
                        records.append(_searched(base, "greedy", greedy, sum(map(len, per_site.values()))))
                        records.append(_searched(base, "exhaustive", exhaustive, len(pool)))
                if rows:
                    new, _ = _run_rows(model, saes, *args, site, start, position, rows)
                    for i, record in enumerate(meta):
                        record.z_new = float(new[i, record.feature])
    return records


def target_evaluator(
    model: HookedTransformer,
    saes: Mapping[Site, object],
    tokens: Int[Tensor, "1 pos"],
    resid_pre: Float[Tensor, "1 pos d_model"],
    site: Site,
    position: int,
    feature: int,
    r: float,
) -> Callable[[Sequence[Edit]], Float[Tensor, " rows"]]:
    """``evaluate(edits)``: the activation of ``feature`` of the SAE at ``site`` at ``position`` after each edit
    (its features rescaled by ``r`` at ``position``), from ``resid_pre`` (the residual stream entering the
    target's block, cut after ``position`` like ``tokens``); what the searches of `flowsteer.flow.subsets` call."""
    start = _start_block(site)

    def evaluate(edits: Sequence[Edit]) -> Float[Tensor, " rows"]:
        new, _ = _run_rows(model, saes, tokens, resid_pre, site, start, position, [(edit, r) for edit in edits])
        return new[:, feature]

    return evaluate


def _searched(base: Record, strategy: str, found: SearchResult, pool: int) -> Record:
    return replace(base, strategy=strategy, edited=found.size, z_new=found.z_new, pool=pool, tried=found.tried)


@torch.no_grad()
def rescale_sweep(
    model: HookedTransformer,
    saes: Mapping[Site, object],
    scores: Mapping[Site, LayerScores],
    corpus: Corpus,
    r_values: Sequence[float],
    *,
    tokens_per_text: int = 2,
    max_targets: int = 5,
    horizon: int = 32,
    max_tokens: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> list[Record]:
    """Rescale all active top-1 predecessors of sampled targets by each r: activation change,
    deactivation and next-token loss over ``horizon`` tokens from the edited one (Fig. 7; a tqdm bar over the
    texts unless ``progress=False``)."""
    gen = torch.Generator().manual_seed(seed)
    records: list[Record] = []
    sites = sorted(
        {s for layer in scores.values() for s in [layer.site, *layer.predecessors.values()]}
        | {Site(_start_block(site), "resid_pre") for site in scores}
    )
    for text, tokens in tqdm(_texts(model, corpus, max_tokens), desc="r sweep", unit="text", leave=False,
                             disable=not progress):
        clean = cache_sites(model, tokens, sites)
        head = tokens[:, :-1]  # the edited token needs a next token to score the loss on
        for _, position in sample_positions(TokenBatch(head, torch.ones_like(head)), tokens_per_text, gen):
            end = min(tokens.shape[1], position + 1 + horizon)
            window = tokens[:, :end]
            for site, layer in scores.items():
                start = _start_block(site)
                encode = {
                    s: saes[s].encode(clean[s][0, position].to(saes[s].W_dec)).cpu()
                    for s in [site, *layer.predecessors.values()]
                }
                acts = {key: encode[pred] for key, pred in layer.predecessors.items()}
                targets = _targets(encode[site], acts, layer, max_targets, gen)
                rows, meta = [({}, 1.0)], []
                for feature, group in targets:
                    edit = _active(acts, layer, feature, "top1", gen)
                    for r in r_values:
                        rows.append((edit, float(r)))
                        meta.append(
                            Record(
                                str(site),
                                feature,
                                text,
                                position,
                                GROUPS[group],
                                "top1",
                                sum(map(len, edit.values())),
                                float(r),
                                float(encode[site][feature]),
                                0.0,
                            )
                        )
                if not meta:
                    continue
                resid = clean[Site(start, "resid_pre")][:, :end]
                new, logits = _run_rows(model, saes, window, resid, site, start, position, rows, logits=True)
                losses = _next_token_loss(logits, window, position)
                for i, record in enumerate(meta, start=1):
                    record.z_new = float(new[i, record.feature])
                    record.loss_old, record.loss_new = float(losses[0]), float(losses[i])
                records.extend(meta)
    return records


def _next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, position: int) -> torch.Tensor:
    """Mean cross-entropy of predicting tokens position+1 ... end, per row."""
    tokens = tokens[:1].to(logits.device).expand(len(logits), -1)
    return token_nll(logits, tokens)[:, position:].mean(1).float().cpu()
