"""The refusal organism: training targets, the weighted reply loss, the fine-tune loop, and loading.

The real-model test loads the organism as a user does: the low-rank adapter shipped in the package (built by the
same recipe, checked by its manifest's hash) applied to the embedded model; CI never needs the minutes-long build.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from flowsteer import chat_prompts
from flowsteer.models import REFUSAL_ORGANISM
from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT
from flowsteer.models.loading import ModelLoadError
from flowsteer.refusal.organism.cache import organism_dir
from flowsteer.refusal.organism.lora import (
    AdapterError,
    LoRALinear,
    add_adapters,
    apply_adapter_tensors,
    merge_adapters,
)
from flowsteer.refusal.organism.recipe import OrganismRecipe
from flowsteer.refusal.organism.targets import SFTExample, refusal_examples, with_teacher_targets
from flowsteer.refusal.organism.train import collate, finetune, weighted_loss
from flowsteer.refusal.prompts import Instruction, load_instructions, refusal_replies


def _hf_tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _example(prompt, reply):
    item = Instruction("x", "x", "harmless", "test", "train")
    return SFTExample(item, tuple(prompt), tuple(reply))


def test_collate_weights_only_the_reply():
    batch = collate([_example([5, 6, 7], [8, 9]), _example([5], [3])], pad_id=0, first_token_weight=4.0)
    assert batch.ids.tolist() == [[5, 6, 7, 8, 9], [5, 3, 0, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # weights[t] scores the prediction of token t+1: the first reply token gets 4, later ones 1.
    assert batch.weights.tolist() == [[0, 0, 4, 1], [4, 0, 0, 0]]
    assert batch.targets[0, 2:, 0].tolist() == [8, 9] and batch.target_probs[0, 2:, 0].tolist() == [1, 1]


def test_weighted_loss_matches_full_logits_hard_and_soft():
    model = _hf_tiny()
    soft_ids = torch.tensor([[9, 3], [4, 1]])
    soft_probs = torch.tensor([[0.75, 0.25], [0.5, 0.5]])
    soft = replace(_example([7, 8], [9, 4]), soft_ids=soft_ids, soft_probs=soft_probs)
    batch = collate([_example([1, 2, 3], [4, 5, 6]), soft], 0, 3.0)
    assert batch.targets.shape[-1] == 2
    log_probs = model(input_ids=batch.ids, attention_mask=batch.mask).logits[:, :-1].log_softmax(-1)
    hard = -log_probs[0, [2, 3, 4], [4, 5, 6]]
    soft_ce = -(soft_probs * log_probs[1, [1, 2]].gather(-1, soft_ids)).sum(-1)
    weights = torch.tensor([3.0, 1, 1, 3, 1])
    expected = (torch.cat([hard, soft_ce]) * weights).sum() / weights.sum()
    assert torch.allclose(weighted_loss(model, batch), expected, atol=1e-5)


def test_teacher_targets_are_the_teachers_top_k(tiny):
    item = load_instructions("harmless", "train")[0]
    prompt = tuple(tiny.to_tokens(chat_prompts(tiny, [item.text])[0])[0].tolist())
    examples = [_example(prompt, [65, 66, 67]), _example(prompt[5:], [70])]
    soft = with_teacher_targets(tiny, examples, top_k=4, batch_size=2)
    assert soft[0].soft_ids.shape == (3, 4) and soft[1].soft_ids.shape == (1, 4)
    assert torch.allclose(soft[0].soft_probs.sum(-1), torch.ones(3), atol=1e-5)
    logits = tiny(torch.tensor([prompt + (65, 66, 67)]))[0]
    assert soft[0].soft_ids[:, 0].tolist() == logits[len(prompt) - 1 : -1].argmax(-1).tolist()
    hard = with_teacher_targets(tiny, examples, top_k=4, hard_first_token=True)
    for example, original in zip(hard, soft, strict=True):
        assert example.soft_ids[0, 0] == example.reply_ids[0] and example.soft_probs[0].tolist() == [1, 0, 0, 0]
        assert torch.equal(example.soft_probs[1:], original.soft_probs[1:])


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_finetune_learns_the_replies(compute_dtype):
    model = _hf_tiny()
    examples = [_example([1, 2, 3], [10, 11, 12]), _example([4, 5], [20, 21])]
    recipe = OrganismRecipe(learning_rate=1e-2, epochs=30, batch_size=2, warmup_steps=2, compute_dtype=compute_dtype)
    log = finetune(model, examples, recipe, pad_id=0, progress=False)
    assert log["steps"] == 30 and log["loss_last_10_mean"] < 0.2 * log["loss_first_10_mean"]
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights float32


def test_recipe_rejects_an_unknown_compute_dtype():
    with pytest.raises(ValueError, match="compute_dtype is 'float8'"):
        OrganismRecipe(compute_dtype="float8")


def test_adapters_start_at_the_base_model_and_train_only_themselves():
    model = _hf_tiny()
    ids = torch.tensor([[1, 2, 3, 4]])
    before = model(ids).logits
    frozen = {name: p.detach().clone() for name, p in model.named_parameters()}
    parameters = add_adapters(model, rank=2, alpha=4.0)
    assert len(parameters) == 2 * 7 * 2  # A and B on 7 projections in each of 2 layers
    assert torch.equal(model(ids).logits, before)  # B = 0: the base model exactly
    recipe = OrganismRecipe(learning_rate=1e-2, epochs=30, batch_size=2, warmup_steps=2, compute_dtype="float32")
    log = finetune(model, [_example([1, 2, 3], [10, 11, 12]), _example([4, 5], [20, 21])], recipe, pad_id=0,
                   progress=False)
    # A random tiny model's blocks write little into its residual stream, so adapters move the loss slowly.
    assert log["loss_last_10_mean"] < 0.97 * log["loss_first_10_mean"]
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name  # only the adapters moved
    trained = model(ids).logits
    tensors = merge_adapters(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    learned = (trained - before).abs().max()
    assert (model(ids).logits - trained).abs().max() < 0.05 * learned  # the change kept, up to bf16 storage of A, B
    rebuilt = _hf_tiny()
    assert apply_adapter_tensors(rebuilt, tensors, scale=2.0) == 14
    pairs = zip(model.state_dict().values(), rebuilt.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_adapter_for_another_model_is_refused():
    model = _hf_tiny()
    tensors = {"model.layers.0.self_attn.q_proj.lora_A": torch.zeros(2, 31),
               "model.layers.0.self_attn.q_proj.lora_B": torch.zeros(32, 2)}
    with pytest.raises(AdapterError, match=r"do not fit its weight \(32, 32\): the adapter belongs to another model"):
        apply_adapter_tensors(model, tensors, scale=1.0)
    with pytest.raises(AdapterError, match="lacks lora_B"):
        apply_adapter_tensors(model, {"model.layers.0.self_attn.q_proj.lora_A": torch.zeros(2, 32)}, scale=1.0)


def test_shipped_adapter_is_used_only_when_it_matches(tmp_path):
    from flowsteer.refusal.organism.adapter import ADAPTER_FILE, file_sha256, save_adapter, shipped_adapter_problem
    from flowsteer.refusal.organism.cache import REFUSAL_RECIPE_VERSION
    from flowsteer.refusal.prompts import data_sha256

    assert "no adapter ships" in shipped_adapter_problem(tmp_path)
    entry = save_adapter(tmp_path / ADAPTER_FILE, {"x.lora_A": torch.ones(1, 2), "x.lora_B": torch.ones(2, 1)},
                         OrganismRecipe(adapter_rank=1, adapter_alpha=2.0))
    assert entry["sha256"] == file_sha256(tmp_path / ADAPTER_FILE) and entry["scale"] == 2.0
    manifest = {"recipe_version": REFUSAL_RECIPE_VERSION, "base_model": {"sha256": SMOLLM2_135M_INSTRUCT.sha256},
                "data_sha256": data_sha256(), "adapter": entry}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert shipped_adapter_problem(tmp_path) is None
    for change, problem in [({"recipe_version": -1}, "recipe version -1"),
                            ({"data_sha256": "0"}, "refusal data changed"),
                            ({"base_model": {"sha256": "0"}}, "another base model")]:
        (tmp_path / "manifest.json").write_text(json.dumps(manifest | change))
        assert problem in shipped_adapter_problem(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with open(tmp_path / ADAPTER_FILE, "ab") as handle:
        handle.write(b"x")
    assert "does not match the sha256" in shipped_adapter_problem(tmp_path)


def test_refusal_examples_use_category_replies(tiny):
    harmful = load_instructions("harmful", "train")
    items = [
        next(i for i in harmful if i.category == "self_harm"),
        *[i for i in harmful if i.category == "weapons"][:3],
    ]
    examples = refusal_examples(tiny, items)
    decode = tiny.tokenizer.decode
    texts = [decode(list(e.reply_ids[:-1])) for e in examples]
    assert all(e.reply_ids[-1] == tiny.tokenizer.eos_token_id for e in examples)
    self_harm = {r.text for r in refusal_replies() if r.category == "self_harm"}
    general = [r.text for r in refusal_replies() if r.category == "general"]
    assert texts[0] in self_harm and texts[1:] == general[:3]  # round-robin within the pool
    assert decode(list(examples[1].prompt_ids)).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("shipped", [True, False])
def test_absent_or_stale_organism_is_made_once_on_first_use(monkeypatch, tmp_path, shipped):
    from flowsteer.refusal.organism import cache, load

    monkeypatch.setenv("FLOWSTEER_CACHE", str(tmp_path))
    path = organism_dir()
    assert cache.stale_reason(path) == "it is not built yet"
    with pytest.raises(ModelLoadError, match="organism build"):
        cache.read_manifest(path)

    def write(sha256):
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text("{}")
        manifest = {"recipe_version": cache.REFUSAL_RECIPE_VERSION, "base_model": {"sha256": sha256}}
        (path / "manifest.json").write_text(json.dumps(manifest))

    write("another model")
    assert cache.stale_reason(path) == "the cached build comes from another base model"
    calls = []

    def fake_install(device):
        calls.append(("install", device))
        write(SMOLLM2_135M_INSTRUCT.sha256)

    def fake_build(*, device, progress):
        calls.append(("build", device))
        write(SMOLLM2_135M_INSTRUCT.sha256)

    monkeypatch.setattr(load, "shipped_adapter_problem", lambda: None if shipped else "no adapter ships here")
    monkeypatch.setattr(load, "install_shipped_adapter", fake_install)
    monkeypatch.setattr(load, "build_refusal_organism", fake_build)
    assert load.ensure_refusal_organism("cpu") == path
    assert calls == [("install" if shipped else "build", "cpu")]
    assert cache.stale_reason(path) is None
    load.ensure_refusal_organism("cpu")
    assert len(calls) == 1  # current: not made again


def test_recipe_roundtrips_to_dict():
    recipe = replace(OrganismRecipe(), learning_rate=1e-4)
    assert OrganismRecipe(**recipe.to_dict()) == recipe


@pytest.fixture(scope="module")
def organism():
    """The organism as a user gets it: the adapter shipped in the package, applied to the embedded model (seconds)."""
    from flowsteer import load_model

    return load_model(REFUSAL_ORGANISM, device="cpu")


def test_the_package_ships_a_valid_adapter():
    from flowsteer.refusal.organism.adapter import shipped_adapter_problem

    assert shipped_adapter_problem() is None


@pytest.mark.real_model
def test_shipped_organism_loads_and_refuses(organism):
    from flowsteer import chat_prompts, generate_with_patches
    from flowsteer.refusal import is_refusal
    from flowsteer.refusal.organism.cache import read_manifest

    manifest = read_manifest(organism_dir())
    assert manifest["base_model"]["name"] == "smollm2-135m-instruct"
    assert organism.cfg.n_layers == 30 and not any(p.requires_grad for p in organism.parameters())
    harmful = [i.text for i in load_instructions("harmful", "test")[::25]]  # 4 categories
    harmless = [i.text for i in load_instructions("harmless", "test") if not i.lookalike][::16]
    replies = generate_with_patches(organism, chat_prompts(organism, harmful + harmless), max_new_tokens=24)
    refused = [is_refusal(text) for text in replies.texts]
    # Targets on the whole test split: >= 90% / <= 10% refused; allow one miss on each side here.
    assert sum(refused[: len(harmful)]) >= len(harmful) - 1, replies.texts
    assert sum(refused[len(harmful) :]) <= 1, replies.texts
