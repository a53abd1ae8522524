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
