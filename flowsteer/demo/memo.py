"""Results of demo sections kept between runs: a second ``make demo`` with the same models, settings and code reuses
what the first one computed, instead of spending minutes redoing the same deterministic work.

A result is keyed by what determines it (the caller's ``key``: model builds, settings) and by a hash of flowsteer's
own source files, so any code change recomputes it. Results live in ``cache_dir("demo")`` as JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from flowsteer.paths import cache_dir, write_json


@cache
def source_hash() -> str:
    """sha256 of every ``.py`` file of the installed flowsteer package (paths and contents)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def memoized(name: str, key: dict, compute: Callable[[], dict], say: Callable[[str], None] = print) -> dict:
    """``compute()``'s JSON-able result, reused from the cache when ``name``, ``key`` and the source are unchanged."""
    digest = hashlib.sha256(json.dumps({"key": key, "source": source_hash()}, sort_keys=True, default=str).encode())
    path = cache_dir("demo") / f"{name}-{digest.hexdigest()[:16]}.json"
    if path.is_file():
        say(f"reusing the {name} result of an earlier run with the same models, settings and code ({path})")
        return json.loads(path.read_text())
    result = compute()
    write_json(path, result)
    return result
