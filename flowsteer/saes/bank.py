"""`SAEBank`: the SAEs of one model keyed by `Site`, stored in SAELens's on-disk format.

A bank is a read-only ``Mapping[Site, sae_lens.SAE]``: every value is a real sae-lens inference SAE
(`TopKSAE`, `JumpReLUSAE`, `StandardSAE`, ...), so code that consumes a bank reads ``W_dec``
[d_sae, d_in], ``W_enc``, ``b_enc``, ``threshold`` and calls ``encode``/``decode`` as with any sae-lens SAE.

On disk a bank is a folder with one SAELens folder per site (``cfg.json`` + ``sae_weights.safetensors``,
exactly what ``sae_lens.SAE.save_model`` writes and ``sae_lens.SAE.load_from_disk`` reads), named by hook
name, plus an index ``bank.json``. A folder of SAELens folders without an index loads too (sites come
from each ``cfg.json``'s ``metadata.hook_name``). Loading checks each folder first (readable JSON, a
complete weights file, ``d_in`` agreeing with the weights and the model), so a damaged bank raises
`SAEBankError` naming the file and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer

from flowsteer.display import markdown_table
from flowsteer.models.tl import has_site
from flowsteer.paths import atomic_dir, read_json, write_json
from flowsteer.sites import Site, SiteError

INDEX_FILE = "bank.json"
CONFIG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"  # SAELens's names
FORMAT = "flowsteer-sae-bank"
FORMAT_VERSION = 1


class SAEBankError(ValueError):
    """An SAE bank that cannot be built, loaded or used with a model; the message says why."""


def _hook_name(sae: SAE) -> str | None:
    return sae.cfg.metadata.hook_name


class SAEBank(Mapping[Site, SAE]):
    """SAEs keyed by `Site` (``bank["12/res"]`` or ``bank[Site(12)]``), iterated in forward order.

    Args:
        saes: a mapping from sites (or their text form) to sae-lens SAEs. An SAE whose metadata
            names a hook must name its site's hook; one that names none gets it filled in.
        model_name: the model the SAEs were trained on (kept in the index).
        info: free-form JSON-able facts (training settings, metrics) kept in the index.
    """

    def __init__(self, saes: Mapping[Site | str, SAE], *, model_name: str | None = None, info: dict | None = None):
        self._saes: dict[Site, SAE] = {}
        for key, sae in saes.items():
            site = Site.parse(key)
            if not isinstance(sae, SAE):
                raise SAEBankError(f"the value for {site} is a {type(sae).__name__}, not a sae_lens.SAE")
            hook = _hook_name(sae)
            if hook is None:
                sae.cfg.metadata.hook_name = site.hook_name
            elif hook != site.hook_name:
                raise SAEBankError(
                    f"the SAE given for site {site} was trained on hook {hook!r}, not {site.hook_name!r}; "
                    f"key it by {_site_text(hook)}"
                )
            self._saes[site] = sae
        self.model_name = model_name
        self.info = dict(info or {})

    def __getitem__(self, key: Site | str) -> SAE:
        site = Site.parse(key)
        try:
            return self._saes[site]
        except KeyError:
            have = ", ".join(str(s) for s in self) or "none"
            raise KeyError(f"no SAE at {site} in this bank; sites present: {have}") from None

    def __contains__(self, key: object) -> bool:
        try:
            return Site.parse(key) in self._saes  # type: ignore[arg-type]
        except (SiteError, TypeError, AttributeError):
            return False

    def __iter__(self) -> Iterator[Site]:
        return iter(sorted(self._saes))

    def __len__(self) -> int:
        return len(self._saes)

    def __repr__(self) -> str:
        sites = ", ".join(str(s) for s in self)
        return f"SAEBank({len(self)} SAEs: {sites})"

    def _repr_markdown_(self) -> str:
        metrics = self.info.get("metrics", {})
        headers = ["site", "hook", "architecture", "d_in", "d_sae", "explained variance", "L0", "dead",
                   "CE loss recovered"]
        rows = []
        for site, sae in self.items():
            m = metrics.get(str(site), {})
            rows.append([site, site.hook_name, sae.cfg.architecture(), sae.cfg.d_in, sae.cfg.d_sae,
                         m.get("explained_variance", "-"), m.get("l0", "-"), m.get("dead_fraction", "-"),
                         m.get("ce_loss_recovered", "-")])
        title = f"**SAEBank** of `{self.model_name}`" if self.model_name else "**SAEBank**"
        return f"{title}: {len(self)} SAEs\n\n" + markdown_table(headers, rows)

    @property
    def sites(self) -> list[Site]:
        return list(self)

    def validate(self, model: HookedTransformer) -> SAEBank:
        """Raise `SAEBankError` unless every SAE fits ``model``: its site exists, its hook name is the
        site's hook and ``d_in`` equals the width of the activation at that hook."""
        for site, sae in self.items():
            try:
                site.validate(model.cfg.n_layers)
            except SiteError as error:
                raise SAEBankError(f"bank does not fit {model.cfg.model_name}: {error}") from None
            if not has_site(model, site):
                raise SAEBankError(f"{model.cfg.model_name} has no hook {site.hook_name!r} for site {site}")
            if _hook_name(sae) != site.hook_name:
                raise SAEBankError(f"the SAE at {site} names hook {_hook_name(sae)!r}, expected {site.hook_name!r}")
            if sae.cfg.d_in != model.cfg.d_model:
                raise SAEBankError(
                    f"the SAE at {site} has d_in={sae.cfg.d_in} but {model.cfg.model_name}'s activations at "
                    f"{site.hook_name} have d_model={model.cfg.d_model}: it was trained on another model"
                )
        return self

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> SAEBank:
        """Move every SAE (in place) and return the bank."""
        for sae in self._saes.values():
            sae.to(device=device, dtype=dtype)
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank (atomically: the folder appears complete or not at all)."""
        path = Path(path)
        entries = []
        with atomic_dir(path) as tmp:
            for site, sae in self.items():
                sae.save_model(tmp / site.hook_name)
                entries.append(
                    {
                        "site": str(site),
                        "hook_name": site.hook_name,
                        "path": site.hook_name,
                        "architecture": sae.cfg.architecture(),
                        "d_in": sae.cfg.d_in,
                        "d_sae": sae.cfg.d_sae,
                    }
                )
            write_json(
                tmp / INDEX_FILE,
                {"format": FORMAT, "version": FORMAT_VERSION, "model_name": self.model_name, "saes": entries,
                 "info": self.info},
            )
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: HookedTransformer | None = None,
        *,
        sites: list[Site | str] | None = None,
        device: torch.device | str | None = None,
        dtype: str | None = None,
    ) -> SAEBank:
        """Load a bank folder (or a folder of SAELens SAE folders); validate against ``model`` if given.

        Args:
            sites: load only these sites (default: all).
            device: where to put the SAEs (default: the model's device, else CPU).
            dtype: e.g. ``"float32"`` (default: as saved).
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no SAE bank at {path}: train one with `flowsteer train-saes --out {path}`")
        index = _read_index(path)
        wanted = None if sites is None else {Site.parse(s) for s in sites}
        device = str(device if device is not None else (model.cfg.device if model is not None else "cpu"))
        saes: dict[Site, SAE] = {}
        for site, folder in index["folders"].items():
            if wanted is not None and site not in wanted:
                continue
            sae = _load_sae(folder, site, path, model, device, dtype)
            if _hook_name(sae) not in (None, site.hook_name):
                raise SAEBankError(
                    f"{folder / CONFIG_FILE} names hook {_hook_name(sae)!r} but the index puts it at {site} "
                    f"({site.hook_name}); the bank folder is inconsistent"
                )
            saes[site] = sae
        if wanted is not None and (missing := wanted - set(saes)):
            raise SAEBankError(
                f"{path} has no SAE at {', '.join(str(s) for s in sorted(missing))}; it holds "
                f"{', '.join(str(s) for s in sorted(index['folders']))}"
            )
        bank = cls(saes, model_name=index["model_name"], info=index["info"])
        return bank.validate(model) if model is not None else bank

    @classmethod
    def from_pretrained(
        cls,
        release: str,
        sae_ids: list[str] | None = None,
        model: HookedTransformer | None = None,
        *,
        device: str = "cpu",
    ) -> SAEBank:
        """SAEs from SAELens's pretrained registry (``release``; ``sae_ids`` default: all of it).

        Needs the Hugging Face hub (or its local cache); without it this raises `SAEBankError`
        saying so. Sites come from each SAE's hook name.
        """
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        directory = get_pretrained_saes_directory()
        if release not in directory:
            raise SAEBankError(
                f"{release!r} is not in SAELens's pretrained registry ({len(directory)} releases, e.g. "
                f"{', '.join(sorted(directory)[:3])}); see sae_lens.loading.pretrained_saes_directory"
            )
        entry = directory[release]
        ids = list(entry.saes_map) if sae_ids is None else list(sae_ids)
        saes: dict[Site, SAE] = {}
        for sae_id in ids:
            try:
                sae = SAE.from_pretrained(release, sae_id, device=device)
            except (OSError, ConnectionError, TimeoutError) as error:
                raise SAEBankError(
                    f"could not fetch SAE {sae_id!r} of {release!r} from the Hugging Face hub "
                    f"({type(error).__name__}: {str(error).splitlines()[0]}). No hub is reachable here: train "
                    "SAEs locally (`flowsteer train-saes`) or load a bank folder with SAEBank.load."
                ) from error
            hook = _hook_name(sae)
            try:
                site = Site.from_hook_name(hook or "")
            except SiteError:
                raise SAEBankError(
                    f"SAE {sae_id!r} of {release!r} reads hook {hook!r}, which is not a flowsteer site"
                ) from None
            saes[site] = sae
        bank = cls(saes, model_name=entry.model, info={"release": release})
        return bank.validate(model) if model is not None else bank


def _site_text(hook: str) -> str:
    try:
        return str(Site.from_hook_name(hook))
    except SiteError:
        return hook


def _retrain(path: Path) -> str:
    """What to do about a damaged bank at ``path``."""
    return (
        f"delete {path} and train the bank again (`flowsteer train-saes --out {path} ...`; default_bank re-trains "
        "its cache once deleted), or copy it again from where it came from"
    )


def _load_sae(
    folder: Path, site: Site, bank: Path, model: HookedTransformer | None, device: str, dtype: str | None
) -> SAE:
    """The SAE in ``folder``, its config and weights checked first so that errors name the bad file."""
    from safetensors import SafetensorError, safe_open

    fix = _retrain(bank)
    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    cfg = read_json(cfg_path, fix, SAEBankError)
    if not isinstance(cfg, dict) or not all(isinstance(cfg.get(key), int) for key in ("d_in", "d_sae")):
        raise SAEBankError(f"{cfg_path} is not an SAE config: it gives no integer d_in and d_sae; {fix}")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    try:
        with safe_open(str(weights), "pt") as handle:
            shape = handle.get_slice("W_dec").get_shape() if "W_dec" in handle.keys() else None
    except (SafetensorError, OSError) as exc:
        raise SAEBankError(f"{weights} is missing, truncated or not a safetensors file ({exc}); {fix}") from exc
    if shape != [d_sae, d_in]:
        found = "no W_dec" if shape is None else f"W_dec of shape {shape}"
        raise SAEBankError(
            f"{weights} holds {found} but {cfg_path} gives [d_sae, d_in] = [{d_sae}, {d_in}]: the config and "
            f"the weights do not belong together; {fix}"
        )
    if model is not None and d_in != model.cfg.d_model:
        raise SAEBankError(
            f"{cfg_path} gives d_in={d_in} but {model.cfg.model_name}'s activations at {site.hook_name} have "
            f"d_model={model.cfg.d_model}: the SAE was trained on another model; load the bank with that model, "
            f"or train one for this model (`flowsteer train-saes --model {model.cfg.model_name} --out FOLDER`)"
        )
    try:
        return SAE.load_from_disk(folder, device=device, dtype=dtype)
    except (KeyError, TypeError, RuntimeError) as exc:  # unknown architecture, missing fields, other weights
        raise SAEBankError(f"cannot build an SAE from {folder} ({type(exc).__name__}: {exc}); {fix}") from exc


def _read_index(path: Path) -> dict[str, Any]:
    """Sites -> SAE folders, from ``bank.json`` or, without one, from each sub-folder's ``cfg.json``."""
    index_path = path / INDEX_FILE
    if index_path.is_file():
        index = read_json(index_path, _retrain(path), SAEBankError)
        if index.get("format") != FORMAT:
            raise SAEBankError(f"{index_path} is not a flowsteer SAE bank index (format {index.get('format')!r})")
        if index.get("version", 0) > FORMAT_VERSION:
            raise SAEBankError(f"{index_path} has format version {index['version']}; upgrade flowsteer to read it")
        folders = {}
        for entry in index["saes"]:
            site = Site.parse(entry["site"])
            if entry.get("hook_name", site.hook_name) != site.hook_name:
                raise SAEBankError(f"{index_path}: site {site} listed with hook {entry['hook_name']!r}")
            folders[site] = path / entry["path"]
        return {"folders": folders, "model_name": index.get("model_name"), "info": index.get("info", {})}
    folders = {}
    for cfg_path in sorted(path.glob(f"*/{CONFIG_FILE}")):
        cfg = read_json(cfg_path, _retrain(path), SAEBankError)
        hook = cfg.get("metadata", {}).get("hook_name") if isinstance(cfg, dict) else None
        try:
            site = Site.from_hook_name(hook or "")
        except SiteError:
            raise SAEBankError(f"{cfg_path} names hook {hook!r}, which is not a flowsteer site") from None
        if site in folders:
            raise SAEBankError(f"{path} holds two SAEs for {site}: {folders[site].name} and {cfg_path.parent.name}")
        folders[site] = cfg_path.parent
    if not folders:
        raise SAEBankError(f"{path} holds no SAE: expected {INDEX_FILE} or sub-folders with cfg.json")
    return {"folders": folders, "model_name": None, "info": {}}
