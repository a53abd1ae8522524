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


_PROBE_INSTRUCTIONS = ("Name a colour.", "Explain how tides work?", "hello")


def post_instruction_positions(model: HookedTransformer) -> list[int]:
    """Prompt positions (negative, counted from the end) of the chat-template tokens that follow the
    user instruction, e.g. ``<|im_end|> \\n <|im_start|> assistant \\n`` for ChatML: ``[-6, ..., -1]``.

    Models without a chat template give ``[-1]`` (the last token of the instruction).
    """
    counts = set()
    for instruction in _PROBE_INSTRUCTIONS:
        prompt = chat_prompt(model, instruction)
        suffix = prompt[prompt.rindex(instruction) + len(instruction) :]
        if not suffix:
            return [-1]
        suffix_ids = model.tokenizer.encode(suffix, add_special_tokens=False)
        prompt_ids = model.to_tokens(prompt, move_to_device=False)[0].tolist()
        if prompt_ids[-len(suffix_ids) :] != suffix_ids:
            raise ValueError(
                f"the chat template's post-instruction text {suffix!r} does not tokenize the same alone as at the "
                "end of a prompt; pass positions explicitly"
            )
        counts.add(len(suffix_ids))
    if len(counts) != 1:
        raise ValueError(f"post-instruction token counts differ between instructions: {sorted(counts)}")
    return list(range(-counts.pop(), 0))
