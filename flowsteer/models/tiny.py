"""`tiny_model`: a small random Llama-style `HookedTransformer` built in-process, for fast tests.

It has the embedded model's shape of architecture (RMSNorm, rotary, gated SiLU MLP, grouped-query
attention, untied unembedding) and a byte-level tokenizer with the same ChatML special tokens and
chat template, so every code path that runs on SmolLM2 runs on it in milliseconds.
"""

from __future__ import annotations

import warnings

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from flowsteer.models.loading import prepare, register_model

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: 3 special tokens + 256 bytes, ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(byte_alphabet):
        vocab[symbol] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
        name_or_path="flowsteer-byte-tokenizer",
        add_bos_token=True,  # tells TransformerLens to keep this tokenizer as it is
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_model(
    *,
    n_layers: int = 4,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int = 2,
    d_mlp: int = 128,
    n_ctx: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedTransformer:
    """A frozen random Llama-style model with a byte-level tokenizer (vocabulary 259)."""
    tokenizer = byte_tokenizer()
    cfg = HookedTransformerConfig(
        model_name="tiny-llama",
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        n_key_value_heads=n_key_value_heads,
        d_mlp=d_mlp,
        n_ctx=n_ctx,
        d_vocab=len(tokenizer),
        act_fn="silu",
        normalization_type="RMS",
        final_rms=True,
        positional_embedding_type="rotary",
        rotary_dim=d_model // n_heads,
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        init_weights=True,
        seed=seed,
        device=str(device),
        dtype=dtype,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="left")
    return prepare(model)


TINY_MODEL = "tiny-random-llama"
register_model(TINY_MODEL)(lambda device, dtype: tiny_model(device=device, dtype=dtype))
