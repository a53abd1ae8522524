"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

import torch

from flowsteer.models import DEFAULT_MODEL

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="weight dtype")


def load_model_from(args: argparse.Namespace):
    from flowsteer.models import load_model

    return load_model(args.model, device=args.device, dtype=DTYPES[args.dtype])


def add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    """Decoding options shared by ``generate`` and ``steer``: the chat template unless --raw, greedy unless
    --sample."""
    parser.add_argument("--raw", action="store_true", help="use the prompt as raw text, without the chat template")
    parser.add_argument("--system", default=None, help="system message for the chat template")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default 64)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    parser.add_argument("--top-p", type=float, default=None,
                        help="nucleus sampling: keep the likeliest tokens up to this probability (with --sample)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def prompt_from(model, args: argparse.Namespace) -> str:
    """``args.prompt`` in the chat template, or as given with --raw."""
    from flowsteer.models import chat_prompt

    if args.raw:
        if args.system is not None:
            raise ValueError("--system needs the chat template; drop --raw or --system")
        return args.prompt
    return chat_prompt(model, args.prompt, system=args.system)


def generation_options(args: argparse.Namespace) -> dict:
    """`generate_with_patches` keyword arguments from the shared decoding options."""
    return dict(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
                top_p=args.top_p, seed=args.seed)
