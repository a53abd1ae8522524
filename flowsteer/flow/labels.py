"""Feature labels without Neuronpedia: top activating contexts and top promoted tokens.

For every feature of the chosen SAEs:

- **contexts**: the ``n_contexts`` corpus tokens where it is most active, each with ``before``
  tokens of context and ``after`` tokens following (the first token of each text is skipped: it is
  the BOS token or, without one, the attention-sink position whose huge activations would crowd out
  everything else);
- **promoted tokens**: the ``n_tokens`` tokens whose logits its decoder direction raises most. The
  direction is pushed through the final norm's linear part (centred for LayerNorm, times the
  norm's gain) and the unembedding W_U; the norm's 1/rms factor is the same for every token, so it
  does not change the ranking, and b_U does not depend on the feature.

Computed in one streaming pass (memory: ``n_contexts x F`` per site), saved as one safetensors file
per site plus ``labels.json`` (settings, cache key, SAE fingerprints and the text of every token id
used), so labels are shown later without loading the model. `load_or_compute` recomputes only when
the SAEs or the corpus key change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.evals.lens import logit_lens
from flowsteer.flow.tokens import Corpus, token_batches
from flowsteer.patching import cache_sites
from flowsteer.patching.features import decoder_directions
from flowsteer.paths import atomic_dir, read_json, read_safetensors
from flowsteer.sites import FeatureId, Site

FORMAT = "flowsteer-feature-labels/1"


@dataclass
class SiteLabels:
    """Labels of every feature of one SAE (``F`` features, ``n`` contexts, window ``w``, ``m`` tokens)."""

    values: Float[Tensor, "F n"]  # top activations, 0 where fewer than n hits
    windows: Int[Tensor, "F n w"]  # token ids around each hit (-1 = none); the hit sits at ``before``
    promoted: Int[Tensor, "F m"]  # top promoted token ids
    promoted_logits: Float[Tensor, "F m"]


def sae_fingerprint(sae: object) -> str:
    """A short hash of an SAE's encoder and decoder weights."""
    digest = hashlib.blake2b(digest_size=12)
    for tensor in (sae.W_enc, sae.W_dec):
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _show(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", "⇥")


class FeatureLabels:
    """Labels of the features of several SAEs; call it on a `FeatureId` for ``(label, context)``."""

    def __init__(self, sites: dict[Site, SiteLabels], vocab: dict[int, str], meta: dict):
        self.sites, self.vocab, self.meta = sites, vocab, meta
        self.before = int(meta["before"])

    def _site(self, feature: FeatureId | str) -> tuple[SiteLabels, int]:
        feature = FeatureId.parse(feature)
        if feature.site not in self.sites:
            raise KeyError(f"no labels for {feature.site}; labelled sites: {', '.join(map(str, self.sites))}")
        return self.sites[feature.site], feature.index

    def promoted_tokens(self, feature: FeatureId | str, n: int | None = None) -> list[str]:
        """The top promoted tokens (none for a feature left out of ``compute(features=...)``)."""
        labels, index = self._site(feature)
        return [self.vocab[i] for i in labels.promoted[index, :n].tolist() if i >= 0]

    def contexts(self, feature: FeatureId | str, n: int | None = None) -> list[tuple[float, str]]:
        """``(activation, text)`` of the top contexts, the activating token marked ``⟦…⟧``."""
        labels, index = self._site(feature)
        found = []
        for value, window in zip(labels.values[index, :n].tolist(), labels.windows[index, :n], strict=True):
            if value <= 0:
                break
            pieces = [self.vocab[i] if i >= 0 else "" for i in window.tolist()]
            hit = self.before
            text = "".join(pieces[:hit]) + "⟦" + pieces[hit] + "⟧" + "".join(pieces[hit + 1 :])
            found.append((value, _show(text)))
        return found

    def label(self, feature: FeatureId | str, n: int = 4) -> str:
        """A short label: the top promoted tokens."""
        return ", ".join(repr(_show(t))[1:-1] for t in self.promoted_tokens(feature, n))

    def __call__(self, feature: FeatureId | str) -> tuple[str, str]:
        contexts = self.contexts(feature, 1)
        return self.label(feature), contexts[0][1] if contexts else ""

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write atomically: ``labels.json`` and one ``<layer>-<kind>.safetensors`` per site."""
        with atomic_dir(directory) as tmp:
            for site, labels in self.sites.items():
                tensors = {name: getattr(labels, name).contiguous() for name in SiteLabels.__annotations__}
                save_file(tensors, tmp / f"{site.layer}-{site.short}.safetensors")
            meta = dict(self.meta, format=FORMAT, sites=[str(s) for s in self.sites])
            meta["vocab"] = {str(i): text for i, text in sorted(self.vocab.items())}
            (tmp / "labels.json").write_text(json.dumps(meta, indent=1))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> FeatureLabels:
        directory = Path(directory)
        meta_path = directory / "labels.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} holds no feature labels (labels.json missing)")
        fix = f"delete {directory} and compute the labels again"
        meta = read_json(meta_path, fix)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path} is not a {FORMAT} file")
        sites = {}
        for text in meta["sites"]:
            site = Site.parse(text)
            tensors = read_safetensors(directory / f"{site.layer}-{site.short}.safetensors", fix)
            sites[site] = SiteLabels(**{name: tensors[name] for name in SiteLabels.__annotations__})
        vocab = {int(i): t for i, t in meta.pop("vocab").items()}
        return cls(sites, vocab, meta)

    # -- computing ---------------------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        model: HookedTransformer,
        saes: Mapping[Site, object],
        corpus: Corpus,
        *,
        sites: Sequence[Site] | None = None,
        features: Mapping[Site, Sequence[int]] | None = None,
        n_contexts: int = 8,
        n_tokens: int = 8,
        before: int = 12,
        after: int = 3,
        batch_size: int = 8,
        max_tokens: int = 128,
        key: str = "",
        progress: bool = True,
    ) -> FeatureLabels:
        """Label every feature of ``saes`` (or of ``sites``) from one pass over ``corpus`` (a tqdm bar over its
        batches unless ``progress=False``).

        ``features`` (``{site: [index, ...]}``) limits the promoted tokens, the costly part (a
        ``[F, d_model] x [d_model, d_vocab]`` product per site), to those features; the sites
        default to its keys. Contexts are always kept for every feature of a labelled site.
        """
        if sites is None:
            sites = sorted(saes) if features is None else sorted(Site.parse(s) for s in features)
        else:
            sites = sorted(Site.parse(s) for s in sites)
        rows = {} if features is None else {Site.parse(s): list(v) for s, v in features.items()}
        top = {s: _TopContexts(saes[s].cfg.d_sae, n_contexts) for s in sites}
        tokens: list[Tensor] = []  # every real token of the corpus, row after row
        row_starts: list[int] = []
        offset = 0
        batches = token_batches(model, corpus, batch_size=batch_size, max_tokens=max_tokens)
        for batch in tqdm(batches, desc="labels", unit="batch", leave=False, disable=not progress):
            mask = batch.attention_mask.bool().cpu()
            lengths = batch.prompt_lengths.cpu()
            starts = offset + torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
            flat_index = starts[:, None] + mask.long().cumsum(-1) - 1
            keep = mask & (mask.long().cumsum(-1) > 1)  # real tokens after the first of each row
            tokens.append(batch.tokens.cpu()[mask])
            row_starts.extend(starts.tolist())
            offset += int(lengths.sum())
            acts = cache_sites(model, batch, sites)
            for site in sites:
                sae = saes[site]
                x = acts[site][keep.to(acts[site].device)]
                top[site].add(sae.encode(x.to(sae.W_dec)).float().cpu(), flat_index[keep])
            del acts
        if offset == 0:
            raise ValueError("the corpus is empty: pass texts or token batches")
        corpus_tokens = torch.cat(tokens)
        bounds = torch.tensor([*row_starts, offset])
        labelled, used = {}, set()
        for site in sites:
            values, hits = top[site].finish()
            windows = _windows(corpus_tokens, bounds, hits, before, after)
            promoted, logits = promoted_tokens(model, saes[site], n_tokens, rows=rows.get(site, ()) if rows else None)
            labelled[site] = SiteLabels(values, windows, promoted, logits)
            used.update(windows[windows >= 0].unique().tolist(), promoted[promoted >= 0].unique().tolist())
        vocab = {i: model.tokenizer.decode([i]) for i in sorted(used)}
        meta = dict(
            key=key,
            n_contexts=n_contexts,
            n_tokens=n_tokens,
            before=before,
            after=after,
            max_tokens=max_tokens,
            corpus_tokens=offset,
            partial=features is not None,
            fingerprints={str(s): sae_fingerprint(saes[s]) for s in sites},
        )
        return cls(labelled, vocab, meta)


def load_or_compute(
    directory: str | Path, model: HookedTransformer, saes: Mapping[Site, object], corpus: Corpus, *, key: str, **options
) -> FeatureLabels:
    """Cached labels from ``directory`` if they were computed for these SAEs with this corpus ``key``
    (e.g. a hash of the corpus file) and these options; otherwise compute, save and return them."""
    if options.get("sites") is not None:
        sites = sorted(Site.parse(s) for s in options["sites"])
    else:
        sites = sorted(saes) if options.get("features") is None else sorted(Site.parse(s) for s in options["features"])
    try:
        cached = FeatureLabels.load(directory)
        wanted = {str(s): sae_fingerprint(saes[s]) for s in sites}
        recorded = ("n_contexts", "n_tokens", "before", "after", "max_tokens")
        same_options = all(cached.meta.get(k) == v for k, v in options.items() if k in recorded)
        complete = not cached.meta.get("partial") and options.get("features") is None  # partial labels: recompute
        if cached.meta.get("key") == key and cached.meta["fingerprints"] == wanted and same_options and complete:
            return cached
    except (FileNotFoundError, ValueError, KeyError):
        pass
    labels = FeatureLabels.compute(model, saes, corpus, key=key, **options)
    labels.save(directory)
    return labels


class _TopContexts:
    """Running top-n activations per feature and the global token index of each."""

    def __init__(self, n_features: int, n: int):
        self.values = torch.zeros(n, n_features)
        self.indices = torch.full((n, n_features), -1, dtype=torch.long)

    def add(self, acts: Float[Tensor, "t F"], token_index: Int[Tensor, " t"]) -> None:
        values = torch.cat([self.values, acts])
        indices = torch.cat([self.indices, token_index[:, None].expand(-1, acts.shape[1])])
        best, order = values.topk(len(self.values), dim=0)
        self.values, self.indices = best, indices.gather(0, order)
        self.indices[self.values <= 0] = -1
        self.values.clamp_(min=0)

    def finish(self) -> tuple[Tensor, Tensor]:
        return self.values.T.contiguous(), self.indices.T.contiguous()


def _windows(
    corpus_tokens: Int[Tensor, " N"], bounds: Int[Tensor, " rows+1"], hits: Int[Tensor, "F n"], before: int, after: int
) -> Int[Tensor, "F n w"]:
    """Token ids from ``before`` tokens ahead of each hit to ``after`` behind it, within the hit's own
    row (``bounds`` = row starts plus the total); -1 outside the row and for missing hits."""
    row = torch.searchsorted(bounds, hits.clamp(min=0), right=True) - 1
    low, high = bounds[row], bounds[(row + 1).clamp(max=len(bounds) - 1)]
    index = hits[..., None] + torch.arange(-before, after + 1)
    valid = (index >= low[..., None]) & (index < high[..., None]) & (hits[..., None] >= 0)
    windows = corpus_tokens[index.clamp(0, len(corpus_tokens) - 1)].long()
    return torch.where(valid, windows, torch.full_like(windows, -1)).int()


@torch.no_grad()
def promoted_tokens(
    model: HookedTransformer, sae: object, n: int, chunk: int = 256, rows: Sequence[int] | None = None
) -> tuple[Int[Tensor, "F n"], Float[Tensor, "F n"]]:
    """The ``n`` tokens each feature's decoder direction promotes most, through the final norm and W_U.

    With ``rows``, only those features are computed; the others get token id -1 and logit NaN.
    """
    if rows is None:
        return logit_lens(model, decoder_directions(sae).float(), n, chunk)
    rows = torch.as_tensor(list(rows), dtype=torch.long).unique()
    ids = torch.full((sae.cfg.d_sae, n), -1, dtype=torch.int32)
    values = torch.full((sae.cfg.d_sae, n), float("nan"))
    if len(rows):
        ids[rows], values[rows] = logit_lens(model, decoder_directions(sae, rows).float(), n, chunk)
    return ids, values
