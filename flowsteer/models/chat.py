"""Chat formatting: wrap user instructions in a model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

from transformer_lens import HookedTransformer


def chat_prompt(model: HookedTransformer, instruction: str, *, system: str | None = None) -> str:
    """``instruction`` as a user turn in the model's chat template, ending where the reply starts.

    With ``system=None`` the template's own default system line (if any) is used. Models without a
    chat template (base models) get the instruction unchanged.
    """
    tokenizer = model.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return instruction
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": instruction}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_prompts(model: HookedTransformer, instructions: Sequence[str], *, system: str | None = None) -> list[str]:
    """`chat_prompt` for each instruction."""
    return [chat_prompt(model, instruction, system=system) for instruction in instructions]
