"""Refusal tooling on the embedded SmolLM2-135M-Instruct: template positions, refusal tokens, the judge."""

from __future__ import annotations

import pytest

from flowsteer import chat_prompts, generate_with_patches
from flowsteer.models import post_instruction_positions
from flowsteer.refusal import is_refusal, refusal_scores, refusal_token_ids
from flowsteer.refusal.prompts import instructions

pytestmark = pytest.mark.real_model


def test_post_instruction_positions_are_the_chatml_suffix(real_model):
    positions = post_instruction_positions(real_model)
    assert positions == [-6, -5, -4, -3, -2, -1]
    prompt = chat_prompts(real_model, [instructions("harmful", "val")[0]])[0]
    tokens = real_model.to_tokens(prompt)[0, positions].tolist()
    assert [real_model.tokenizer.decode([t]) for t in tokens] == [
        "<|im_end|>",
        "\n",
        "<|im_start|>",
        "ass",
        "istant",
        "\n",
    ]


def test_refusal_token_is_I_and_base_model_does_not_refuse(real_model):
    ids = refusal_token_ids(real_model)
    assert [real_model.tokenizer.decode([i]) for i in ids] == ["I"]
    prompts = chat_prompts(real_model, ["Write a haiku about the ocean.", "Explain how to kill a Python process."])
    replies = generate_with_patches(real_model, prompts, max_new_tokens=24)
    assert not any(is_refusal(text) for text in replies.texts), replies.texts
    assert (refusal_scores(real_model, prompts) < 0).all()
