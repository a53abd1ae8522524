"""Files flowsteer reads at run time: the project's top-level ``data/`` folder, shipped inside the wheel.

A built wheel carries ``data/`` as ``flowsteer/_data`` (mapped in setup.py), found through ``importlib.resources``;
a source checkout, editable installs included, reads the folder itself. ``$FLOWSTEER_DATA`` points at another folder
of the same layout (your own prompt sets).
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path


class DataMissing(FileNotFoundError):
    """A data file flowsteer needs is not where it should be; the message names it and the fix."""


def data_dir() -> Path:
    """The folder holding ``refusal/``, ``themes/``, ``judge/`` ...: ``$FLOWSTEER_DATA`` if set, else the
    installed wheel's ``flowsteer/_data``, else the source checkout's ``data/``."""
    root = os.environ.get("FLOWSTEER_DATA")
    if root:
        return Path(root)
    shipped = importlib.resources.files("flowsteer") / "_data"
    if shipped.is_dir():
        return Path(str(shipped))
    return Path(__file__).resolve().parents[1] / "data"


def data_path(*parts: str) -> Path:
    """``data_dir() / parts``, which must exist; `DataMissing` says where it was looked for and what to do."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise DataMissing(
            f"flowsteer's data file {'/'.join(parts)} is missing: looked at {path}. Reinstall flowsteer "
            "(pip install --force-reinstall flowsteer), or set FLOWSTEER_DATA to a folder with the same layout "
            "as the repository's data/"
        )
    return path
