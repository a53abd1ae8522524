"""Models: the embedded default, any TransformerLens model, and a tiny random one for tests."""

from flowsteer.models.chat import chat_prompt, chat_prompts, post_instruction_positions
from flowsteer.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel, ModelPackageMissing
from flowsteer.models.loading import (
    REFUSAL_ORGANISM,
    ModelLoadError,
    available_models,
    default_device,
    load_model,
    prepare,
    register_model,
)
from flowsteer.models.tiny import tiny_model

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "ModelLoadError",
    "ModelPackageMissing",
    "REFUSAL_ORGANISM",
    "available_models",
    "chat_prompt",
    "chat_prompts",
    "default_device",
    "load_model",
    "post_instruction_positions",
    "prepare",
    "register_model",
    "tiny_model",
]
