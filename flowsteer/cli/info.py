"""``flowsteer info``: the model, its layers and the sites patches can target."""

from __future__ import annotations

import argparse

from flowsteer.cli.common import add_model_arguments, load_model_from
from flowsteer.models import available_models
from flowsteer.paths import cache_dir
from flowsteer.sites import KINDS, SHORT_NAMES, Site


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("info", help="describe a model and its sites")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = load_model_from(args)
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model        {cfg.model_name} ({cfg.original_architecture}, {n_params / 1e6:.1f}M parameters)")
    print(f"device/dtype {cfg.device} / {str(cfg.dtype).removeprefix('torch.')}")
    print(f"layers       {cfg.n_layers} (0..{cfg.n_layers - 1}), d_model {cfg.d_model}, d_mlp {cfg.d_mlp}")
    kv = cfg.n_key_value_heads or cfg.n_heads
    print(f"attention    {cfg.n_heads} heads x {cfg.d_head}, {kv} key/value heads")
    template = "yes" if getattr(model.tokenizer, "chat_template", None) else "no"
    print(f"vocabulary   {cfg.d_vocab}; chat template: {template}")
    print("sites        LAYER/KIND for every layer; kinds:")
    for kind in KINDS:
        print(f"               {SHORT_NAMES[kind]:<4} {kind:<11} e.g. {Site(0, kind).hook_name}")
    print(f"embedded     {', '.join(available_models())}")
    print(f"cache        {cache_dir()}")
    return 0
