"""`generate_with_patches`: batched, seedable generation with patches, correct under a KV cache.

The decoding loop is flowsteer's own (TransformerLens's forward pass and KV cache underneath) so
that before every forward chunk the hook session knows which real positions the chunk holds: the
whole left-padded prompt first, then one generated token per sequence. Patches restricted to
``"prompt"``, ``"generated"`` or explicit positions therefore select the right tokens at every step.
Greedy output equals stock ``HookedTransformer.generate`` token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from flowsteer.display import markdown_table
from flowsteer.models import tl
from flowsteer.models.decode import DecodeCache, uses_fast_decode
from flowsteer.patching.effects import EffectLog
from flowsteer.patching.hooks import HookSession
from flowsteer.patching.inputs import Inputs, TokenBatch, encode
from flowsteer.patching.patch import Patch


@dataclass
class Generation:
    """Generated continuations, one per prompt (text excludes the prompt and stops at EOS)."""

    texts: list[str]
    tokens: list[list[int]]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> str:
        return self.texts[index]

    def __iter__(self):
        return iter(self.texts)

    def _repr_markdown_(self) -> str:
        return markdown_table(["#", "text"], enumerate(self.texts))


def sample_next(
    logits: Float[Tensor, "batch vocab"],
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Next token ids: argmax, or a sample after temperature, top-k and nucleus (top-p) filtering."""
    if not do_sample:
        return logits.argmax(-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _eos_ids(model: HookedTransformer, eos_token_id: int | Sequence[int] | None) -> list[int]:
    if eos_token_id is not None:
        return [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if model.tokenizer is None or model.tokenizer.eos_token_id is None:
        raise ValueError("stop_at_eos needs eos_token_id: the model's tokenizer has none")
    return [model.tokenizer.eos_token_id]


@torch.no_grad()
def _generate_batch(
    model: HookedTransformer,
    batch: TokenBatch,
    session: HookSession,
    *,
    max_new_tokens: int,
    stop_ids: list[int],
    generator: torch.Generator | None,
    sampling: dict,
    progress: tqdm | None,
) -> Tensor:
    size = len(batch)
    device = batch.tokens.device
    lengths = batch.prompt_lengths
    kv_cache = tl.new_kv_cache(model, size)
    fast = uses_fast_decode(model)
    stop = torch.tensor(stop_ids or [-1], device=device)
    finished = torch.zeros(size, dtype=torch.bool, device=device)
    new_tokens: list[Tensor] = []
    session.set_chunk(batch.positions, lengths, step=0)
    # The prompt pass needs logits at the last column only: unembed just that one.
    residual = tl.forward(
        model, batch.tokens, batch.attention_mask, stop_at_layer=model.cfg.n_layers, kv_cache=kv_cache
    )
    logits = tl.unembed(model, residual[:, -1:])[:, -1]
    if fast:
        kv_cache = DecodeCache.from_prompt(model, kv_cache, extra=max_new_tokens)
    ones = torch.ones(size, 1, dtype=batch.attention_mask.dtype, device=device)
    for step in range(1, max_new_tokens + 1):
        token = sample_next(logits, generator=generator, **sampling)
        if stop_ids:
            token = torch.where(finished, stop[0], token)
            finished |= torch.isin(token, stop)
        new_tokens.append(token)
        if progress is not None:
            progress.update(size)
        if step == max_new_tokens or (stop_ids and bool(finished.all())):
            break
        session.set_chunk((lengths + step - 1)[:, None], lengths, step=step)
        logits = tl.forward(model, token[:, None], ones, kv_cache=kv_cache)[:, -1]
    return torch.stack(new_tokens, dim=1)


def generate_with_patches(
    model: HookedTransformer,
    prompts: Inputs,
    patches: Sequence[Patch] = (),
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
    eos_token_id: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    record: EffectLog | None = None,
    progress: bool = False,
) -> Generation:
    """Generate continuations of ``prompts`` with ``patches`` applied at every step.

    Args:
        prompts: text(s) (left-padded together), token ids or a `TokenBatch`. Use
            `flowsteer.models.chat_prompts` to wrap instructions in the chat template first.
        patches: applied to the prompt pass and to every generated token, each restricted to its
            own ``positions``.
        do_sample: greedy when False; else sampled with ``temperature``, ``top_p``, ``top_k``.
        seed: seeds a private generator, so sampled output repeats exactly (for a fixed batch size).
        stop_at_eos: a sequence stops at EOS (the batch stops when all have).
        batch_size: prompts per forward batch (default: all at once).
        record: an `EffectLog` that receives ||Δh|| of every patch at every step.
        progress: show a tqdm bar of generated tokens.
    """
    batch = encode(model, prompts, new_tokens=max_new_tokens)
    stop_ids = _eos_ids(model, eos_token_id) if stop_at_eos else []
    generator = None
    if do_sample:
        generator = torch.Generator(device=batch.tokens.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
    sampling = dict(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k)
    session = HookSession(model, patches, record=record)
    bar = tqdm(total=len(batch) * max_new_tokens, desc="generate", unit="tok", disable=not progress)
    texts: list[str] = []
    tokens: list[list[int]] = []
    with session.attached(), bar:
        for chunk in batch.split(batch_size):
            generated = _generate_batch(
                model,
                chunk,
                session,
                max_new_tokens=max_new_tokens,
                stop_ids=stop_ids,
                generator=generator,
                sampling=sampling,
                progress=bar,
            )
            for row in generated.tolist():
                cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
                tokens.append(row[:cut])
                texts.append(model.tokenizer.decode(row[:cut], skip_special_tokens=True) if model.tokenizer else "")
    return Generation(texts, tokens)
