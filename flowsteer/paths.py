"""Where flowsteer keeps its caches, how it writes files without ever leaving half a file behind, and
how it reads them back so that a damaged file is named in the error, with what to do about it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def cache_dir(*parts: str) -> Path:
    """The user cache directory (``$FLOWSTEER_CACHE``, else ``$XDG_CACHE_HOME/flowsteer``, else
    ``~/.cache/flowsteer``), joined with ``parts`` and created."""
    root = os.environ.get("FLOWSTEER_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flowsteer")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target`` in one rename.

    On error the temporary directory is removed and any existing ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; it replaces ``target`` only on success.

    For writers that take a path (``safetensors.torch.save_file``, ``matplotlib`` ``savefig``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``target`` for writing; it replaces ``target`` only on success."""
    with atomic_path(target) as tmp, open(tmp, mode) as handle:
        yield handle


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(target) as handle:
        json.dump(obj, handle, indent=2, default=str)
        handle.write("\n")


def read_json(path: str | os.PathLike, fix: str, error: type[Exception] = ValueError) -> Any:
    """``path`` parsed as JSON; a missing, unreadable or invalid file raises ``error`` naming it and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path} ({type(exc).__name__}: {exc}); {fix}") from exc


def read_safetensors(
    path: str | os.PathLike, fix: str, error: type[Exception] = ValueError, device: str = "cpu"
) -> dict[str, Any]:
    """The tensors of a safetensors file; a truncated or corrupt one raises ``error`` naming it and ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(device))
    except SafetensorError as exc:
        raise error(f"{path} is truncated or not a safetensors file ({exc}); {fix}") from exc
