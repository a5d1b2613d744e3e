"""Markdown pipe tables: the one builder for the tables in EDA files, the ablation summary and the report."""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    """A value as one table cell: a `|` is escaped and a newline becomes a space, so the row stays intact."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[Any], rows: list[list[Any]]) -> str:
    """Header, separator and one line per row, without a trailing newline."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
