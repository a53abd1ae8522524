"""The ``flowsteer`` command, thin: each subcommand lives in its own module with a ``register`` function that
parses, calls the library and prints."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from flowsteer import __version__

# Subcommand modules, in the order ``flowsteer --help`` lists them.
COMMANDS = ("info", "generate", "train-saes", "flow", "steer", "organism", "refusal", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowsteer",
        description="Feature flow, feature steering and invertible-map interventions on TransformerLens models.",
    )
    parser.add_argument("--version", action="version", version=f"flowsteer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"flowsteer.cli.{name.replace('-', '_')}").register(commands)
    for choice in commands._choices_actions:  # `flowsteer CMD --help` opens with the line `flowsteer --help` lists
        sub = commands.choices[choice.dest]
        sub.description = sub.description or choice.help[0].upper() + choice.help[1:] + "."
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        print(f"flowsteer {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
