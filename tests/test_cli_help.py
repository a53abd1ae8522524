"""`flowsteer --help` and every subcommand's help: descriptions, option help, shared decoding defaults, and
messages that name only what an installed package has."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import flowsteer
from flowsteer.cli import build_parser, main


def subcommands(parser: argparse.ArgumentParser, prefix: str = "flowsteer"):
    """``(command line, parser)`` for every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from subcommands(sub, f"{prefix} {name}")


COMMANDS = list(subcommands(build_parser()))


def test_every_subcommand_is_listed():
    names = {line for line, _ in COMMANDS}
    assert {"flowsteer info", "flowsteer steer", "flowsteer organism build"} <= names
    assert len(names) >= 12


@pytest.mark.parametrize("line, parser", COMMANDS, ids=[line for line, _ in COMMANDS])
def test_every_subcommand_has_a_description_and_every_option_help(line, parser):
    assert parser.description and parser.description.strip(), f"{line} has no description"
    assert "\n" not in parser.description.split(". ")[0], f"{line}: the description's first sentence spans lines"
    missing = [action.option_strings or action.dest for action in parser._actions if not action.help]
    assert not missing, f"{line}: options without help text: {missing}"


def test_top_level_help_lists_every_subcommand_with_a_line():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in commands._choices_actions)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"flowsteer {flowsteer.__version__}"


def test_generate_and_steer_share_decoding_defaults():
    """Chat template unless --raw, greedy unless --sample, the same lengths and sampling settings."""
    parsers = dict(COMMANDS)
    generate = parsers["flowsteer generate"].parse_args(["Hi"])
    steer = parsers["flowsteer steer"].parse_args(["--feature", "1/res/0", "--prompt", "Hi"])
    shared = ("raw", "system", "sample", "max_new_tokens", "temperature", "top_p", "seed")
    assert {k: getattr(generate, k) for k in shared} == {k: getattr(steer, k) for k in shared}
    assert generate.raw is False and generate.sample is False


def _messages(path: Path) -> list[str]:
    """String constants of a module that are not docstrings (error messages, help, printed text)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_message_points_to_a_file_an_installed_package_lacks():
    root = Path(flowsteer.__file__).parent
    offenders = [f"{path.relative_to(root)}: {text!r}" for path in root.rglob("*.py") for text in _messages(path)
                 if any(folder in text for folder in ("analyses/", "benchmarks/", "tests/"))]
    assert not offenders, offenders
