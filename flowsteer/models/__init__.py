"""Models: loading the embedded default, registered names (the refusal organism), local Hugging Face folders and any
TransformerLens model; the decode fast path and forward layouts; chat templates and post-instruction positions; the
compute precision per device (`precision`); a tiny random model for tests. The only package that reaches into
TransformerLens internals."""

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
