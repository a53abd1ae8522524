"""Rich notebook output: Markdown tables for the ``_repr_markdown_`` of flowsteer's result objects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object, digits: int = 3) -> str:
    """One table cell: floats rounded, pipes escaped, newlines folded into spaces."""
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(value, digits) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
