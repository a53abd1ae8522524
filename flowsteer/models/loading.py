"""`load_model`: one call that gives a frozen, unprocessed `HookedTransformer`.

Three sources, tried in this order:

1. a name registered with `register_model` (the embedded SmolLM2-135M-Instruct, and derived models
   such as the refusal organism);
2. a local directory holding a Hugging Face checkpoint (``config.json`` + weights + tokenizer);
3. any official TransformerLens model name, fetched through the Hugging Face hub.

Weights are never processed (no LayerNorm folding, no centring): SAEs trained with SAELens live in
that basis. Embedded GGUF files are dequantised once to float32 and cached as a Hugging Face folder
under `flowsteer.paths.cache_dir`, so later loads skip the slow GGUF step.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from flowsteer.extras import require
from flowsteer.models.decode import install_fast_decode
from flowsteer.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel
from flowsteer.models.fastpath import use_forward_layouts
from flowsteer.paths import atomic_dir, cache_dir

log = logging.getLogger(__name__)

ModelLoader = Callable[[torch.device, torch.dtype], HookedTransformer]
_LOADERS: dict[str, ModelLoader] = {}


class ModelLoadError(RuntimeError):
    """A model name that cannot be loaded here; the message says why and what to do."""


def register_model(name: str) -> Callable[[ModelLoader], ModelLoader]:
    """Decorator: make ``load_model(name)`` call ``loader(device, dtype)``."""

    def decorate(loader: ModelLoader) -> ModelLoader:
        _LOADERS[name] = loader
        return loader

    return decorate


def register_lazy_model(name: str, target: str) -> None:
    """Make ``load_model(name)`` import ``target`` (``"package.module:function"``) on first use and call it as a
    loader: how packages above `flowsteer.models` (the refusal organism) register names without an import cycle."""
    module_name, _, function = target.partition(":")

    def loader(device: torch.device, dtype: torch.dtype) -> HookedTransformer:
        return getattr(importlib.import_module(module_name), function)(device, dtype)

    _LOADERS[name] = loader


# Model organisms built by higher packages (their names resolve without importing those packages up front).
REFUSAL_ORGANISM = "smollm2-135m-refusal"
register_lazy_model(REFUSAL_ORGANISM, "flowsteer.refusal.organism.load:load_refusal_organism")


def available_models() -> list[str]:
    """Names `load_model` resolves without a hub (embedded and registered models)."""
    return sorted(_LOADERS)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> HookedTransformer:
    """Load ``name`` as a frozen (``requires_grad=False``), eval-mode `HookedTransformer`.

    Args:
        name: an embedded/registered name (see `available_models`), a local Hugging Face folder, or an
            official TransformerLens model name (needs the hub or a filled Hugging Face cache).
        device: where the weights live; default CUDA when available, else CPU.
        dtype: weight dtype, e.g. ``torch.bfloat16`` on a GPU.
    """
    device = torch.device(device) if device is not None else default_device()
    if name in _LOADERS:
        model = _LOADERS[name](device, dtype)
    elif (Path(name) / "config.json").is_file():
        model = hooked_from_hf_dir(Path(name), device=device, dtype=dtype)
    else:
        model = _load_official(name, device, dtype)
    model.cfg.model_name = name if name in _LOADERS else model.cfg.model_name
    return prepare(model)


def prepare(model: HookedTransformer) -> HookedTransformer:
    """Make any `HookedTransformer` ready for flowsteer, in place: eval mode, no parameter gradients
    (interventions train, the model never does), weights in the layout the forward pass consumes
    (`flowsteer.models.fastpath`) and the fast decoding step (`flowsteer.models.decode`). Outputs of
    full forward passes are unchanged bit for bit."""
    model.eval()
    model.requires_grad_(False)
    use_forward_layouts(model)
    return install_fast_decode(model)


def hooked_from_hf_dir(
    path: Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    prepend_bos: bool | None = None,
) -> HookedTransformer:
    """Convert a local Hugging Face causal-LM folder into an unprocessed `HookedTransformer`.

    Works for every architecture TransformerLens can convert; the config is read from the folder, so
    no hub is contacted.
    """
    from transformer_lens.loading_from_pretrained import (
        get_pretrained_model_config,
        get_pretrained_state_dict,
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tokenizer = AutoTokenizer.from_pretrained(path)
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        cfg = get_pretrained_model_config(
            str(path), dtype=dtype, device=device, fold_ln=False, default_prepend_bos=prepend_bos
        )
        state_dict = get_pretrained_state_dict(str(path), cfg, hf_model=hf_model, dtype=dtype)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        # TransformerLens swaps in a reloaded tokenizer that always adds BOS; keep the checkpoint's own
        # so that model.tokenizer(text) gives the same ids as to_tokens.
        tokenizer.padding_side = "left"
        model.tokenizer = tokenizer
        model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=False,
            center_writing_weights=False,
            center_unembed=False,
            fold_value_biases=False,
            refactor_factored_attn_matrices=False,
        )
    del hf_model, state_dict
    model.to(device, print_details=False)
    return model.to(dtype, print_details=False)


def converted_gguf_dir(spec: EmbeddedModel) -> Path:
    """The cached float32 Hugging Face folder for an embedded GGUF model, built on first use."""
    target = cache_dir("models") / f"{spec.name}-{spec.sha256[:12]}"
    if (target / "config.json").is_file():
        return target
    gguf_path = spec.verified_path()
    require("gguf", "gguf", f"converting the embedded model {spec.name!r} from its GGUF file")
    log.info("dequantising %s to float32 (once; cached in %s)", gguf_path.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(target) as tmp:
        folder, filename = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
        # The tensors are already float32; the leftover GGUF quantisation marker only blocks saving.
        del hf_model.config.quantization_config
        hf_model.hf_quantizer = None
        hf_model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def _load_embedded(spec: EmbeddedModel, device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    return hooked_from_hf_dir(converted_gguf_dir(spec), device=device, dtype=dtype, prepend_bos=spec.prepend_bos)


for _spec in EMBEDDED_MODELS.values():
    register_model(_spec.name)(lambda device, dtype, spec=_spec: _load_embedded(spec, device, dtype))


def _load_official(name: str, device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        raise ModelLoadError(
            f"unknown model {name!r}. Use an embedded model ({', '.join(available_models())}), a local "
            f"Hugging Face folder with a config.json, or an official TransformerLens name such as "
            f"'gpt2' or 'google/gemma-3-270m' (transformer_lens.supported_models.OFFICIAL_MODEL_NAMES)."
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer.from_pretrained_no_processing(official, device=str(device), dtype=dtype)
    except (OSError, ConnectionError, TimeoutError) as error:
        raise ModelLoadError(
            f"could not fetch {official!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
            f"Without a hub, use the embedded default load_model({DEFAULT_MODEL!r}), or copy the "
            f"checkpoint into the Hugging Face cache or a local folder and pass that folder's path."
        ) from error
