"""The refusal organism: training targets, the weighted reply loss, the fine-tune loop, and loading.

Building the real organism takes ~15-25 minutes on 2 CPU cores, so CI does not build it; the
real-model tests here run against a cached build and are skipped (saying why) when there is none.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from flowsteer.data.refusal import Instruction, load_instructions, refusal_replies
from flowsteer.models.loading import ModelLoadError
from flowsteer.models.organisms import REFUSAL_ORGANISM, organism_dir
from flowsteer.organism.recipe import OrganismRecipe
from flowsteer.organism.targets import SFTExample, refusal_examples
from flowsteer.organism.train import collate, finetune, weighted_loss


def _hf_tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _example(prompt, reply):
    item = Instruction("x", "x", "harmless", "test", "train")
    return SFTExample(item, tuple(prompt), tuple(reply))


def test_collate_weights_only_the_reply():
    ids, mask, weights = collate([_example([5, 6, 7], [8, 9]), _example([5], [3])], pad_id=0, first_token_weight=4.0)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [5, 3, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # weights[t] scores the prediction of token t+1: the first reply token gets 4, later ones 1.
    assert weights.tolist() == [[0, 0, 4, 1], [4, 0, 0, 0]]


def test_weighted_loss_matches_full_logits():
    model = _hf_tiny()
    ids, mask, weights = collate([_example([1, 2, 3], [4, 5, 6]), _example([7, 8], [9])], 0, 3.0)
    logits = model(input_ids=ids, attention_mask=mask).logits
    per_token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    expected = (per_token * weights).sum() / weights.sum()
    assert torch.allclose(weighted_loss(model, ids, mask, weights), expected, atol=1e-5)


def test_finetune_learns_the_replies():
    model = _hf_tiny()
    examples = [_example([1, 2, 3], [10, 11, 12]), _example([4, 5], [20, 21])]
    recipe = OrganismRecipe(learning_rate=1e-2, epochs=30, batch_size=2, warmup_steps=2)
    log = finetune(model, examples, recipe, pad_id=0, progress=False)
    assert log["steps"] == 30 and log["loss_last_10_mean"] < 0.2 * log["loss_first_10_mean"]
    assert not model.training


def test_refusal_examples_use_category_replies(tiny):
    harmful = load_instructions("harmful", "train")
    items = [next(i for i in harmful if i.category == "self_harm"), *[i for i in harmful if i.category == "weapons"][:3]]
    examples = refusal_examples(tiny, items)
    decode = tiny.tokenizer.decode
    texts = [decode(list(e.reply_ids[:-1])) for e in examples]
    assert all(e.reply_ids[-1] == tiny.tokenizer.eos_token_id for e in examples)
    self_harm = {r.text for r in refusal_replies() if r.category == "self_harm"}
    general = [r.text for r in refusal_replies() if r.category == "general"]
    assert texts[0] in self_harm and texts[1:] == general[:3]  # round-robin within the pool
    assert decode(list(examples[1].prompt_ids)).endswith("<|im_start|>assistant\n")


def test_missing_organism_says_how_to_build(monkeypatch, tmp_path):
    from flowsteer import load_model

    monkeypatch.setenv("FLOWSTEER_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match="organism build"):
        load_model(REFUSAL_ORGANISM)


def test_recipe_roundtrips_to_dict():
    recipe = replace(OrganismRecipe(), learning_rate=1e-4)
    assert OrganismRecipe(**recipe.to_dict()) == recipe


@pytest.fixture(scope="module")
def organism():
    if not (organism_dir() / "manifest.json").is_file():
        pytest.skip(
            f"the refusal organism is not built in this cache ({organism_dir()}); CI does not build it (it takes "
            "15-25 min). Build it with: python -m flowsteer.cli organism build"
        )
    from flowsteer import load_model

    return load_model(REFUSAL_ORGANISM, device="cpu")


@pytest.mark.real_model
def test_cached_organism_loads_and_refuses(organism):
    from flowsteer import chat_prompts, generate_with_patches
    from flowsteer.evals import is_refusal
    from flowsteer.models.organisms import read_manifest

    manifest = read_manifest(organism_dir())
    assert manifest["base_model"]["name"] == "smollm2-135m-instruct"
    assert organism.cfg.n_layers == 30 and not any(p.requires_grad for p in organism.parameters())
    harmful = [i.text for i in load_instructions("harmful", "test")[:3]]
    harmless = ["Write a haiku about the ocean.", "Explain how to kill a Python process."]
    replies = generate_with_patches(organism, chat_prompts(organism, harmful + harmless), max_new_tokens=24)
    assert [is_refusal(text) for text in replies.texts] == [True, True, True, False, False], replies.texts
