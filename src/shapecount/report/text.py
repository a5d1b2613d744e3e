"""Markdown pieces every section uses: Jinja2 templates, links to figures, headings moved down a level."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("shapecount.report", "templates"), autoescape=False,
                                trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                                undefined=jinja2.StrictUndefined)


def render(template: str, **values: Any) -> list[str]:
    """The lines of templates/<template> filled with `values` (a missing value is an error, not a blank)."""
    return _TEMPLATES.get_template(template).render(**values).split("\n")


def fig(out: Path, rel: str, caption: str) -> str:
    """A Markdown image of OUT/rel, or a note that it is missing: a report never links a figure that is not there."""
    if (out / rel).is_file():
        return f"![{caption}]({rel})\n"
    return f"> Not available: `{rel}` is missing.\n"


def demote(text: str, by: int = 2) -> str:
    """`text` with its headings `by` levels lower (outside code fences), to sit inside a section of the report."""
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"#{1,6} ", line):
            line = "#" * by + line
        out.append(line)
    return "\n".join(out).strip() + "\n"
