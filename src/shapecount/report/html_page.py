"""report.md -> report.html: one self-contained page (Python-Markdown), readable offline and by itself.

Figures are embedded as PNG data URIs, so the page needs no other file; an image whose file is missing becomes a
note. Raw HTML in the Markdown is not passed through (it is shown as text), the page gets a table of contents
of its sections, and table cells that hold a number are right-aligned. The report separates groups of bullets
with a blank line (the summary's results, then how they were made); each group is drawn as a list of its own.
"""

from __future__ import annotations

import base64
import html
import re
import xml.etree.ElementTree as etree
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.extensions.toc import TocExtension
from markdown.preprocessors import Preprocessor
from markdown.treeprocessors import Treeprocessor

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;background:#fafafa;
margin:0;line-height:1.5}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff;box-shadow:0 0 8px rgba(0,0,0,.06)}
h1{border-bottom:2px solid #333;padding-bottom:6px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:12px 0;font-size:13px;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px;font-size:90%}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
pre code{background:none;padding:0}
figure{margin:16px 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
blockquote{margin:10px 0;padding:6px 12px;border-left:4px solid #e0a800;background:#fff8e1;color:#5d4500}
blockquote p{margin:0}
nav.toc{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px 16px;margin:12px 0}nav.toc ol{margin:4px 0}
"""

_NUM_RE = re.compile(r"^[+-]?\d+(\.\d+)?( [†‡])?$")
_ITEM_RE = re.compile(r"([-*+]|\d+\.) ")
# A paragraph of its own between two groups of bullets ends the first list; it is removed from the page.
_LIST_BREAK = "shapecount-list-break-9c41e7"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


class _ListGroups(Preprocessor):
    """Puts _LIST_BREAK between two list items that a blank line separates: Markdown would join them into one
    loose list, where the report means two lists."""

    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        last = ""  # the last non-blank line
        for line in lines:
            if line.strip() and out and not out[-1].strip() and _ITEM_RE.match(line) and _ITEM_RE.match(last):
                out += [_LIST_BREAK, ""]
            out.append(line)
            last = line if line.strip() else last
        return out


class _SelfContained(Treeprocessor):
    """Embeds each image as a data URI: an image alone in its paragraph becomes a <figure> captioned with its
    alt text, or a note when its file is missing. Marks the table cells that hold a number, drops empty table
    rows and the list breaks."""

    def __init__(self, md: markdown.Markdown, base: Path) -> None:
        super().__init__(md)
        self.base = base

    def run(self, root: etree.Element) -> None:
        for p in [p for p in root if p.tag == "p" and p.text == _LIST_BREAK]:
            root.remove(p)
        for parent in list(root.iter()):
            for img in [e for e in parent if e.tag == "img"]:
                self._embed(parent, img)
        for td in root.iter("td"):
            if not len(td) and _NUM_RE.match((td.text or "").strip()):
                td.set("class", "num")
        for tbody in root.iter("tbody"):  # a table without rows: Python-Markdown adds one empty row
            for tr in [tr for tr in tbody if not any(len(td) or (td.text or "").strip() for td in tr)]:
                tbody.remove(tr)

    def _embed(self, parent: etree.Element, img: etree.Element) -> None:
        src, alt = img.get("src", ""), img.get("alt", "")
        path = self.base / src
        alone = parent.tag == "p" and len(parent) == 1 and not (parent.text or "").strip() \
            and not (img.tail or "").strip()
        if path.is_file():
            img.set("src", _data_uri(path))
            if alone:
                parent.tag = "figure"
                img.tail = None
                etree.SubElement(parent, "figcaption").text = alt
            return
        if alone:
            parent.tag = "blockquote"
            parent.remove(img)
            parent.text = "Not available: "
            code = etree.SubElement(parent, "code")
            code.text, code.tail = src, " is missing."
        else:  # a missing image inside a sentence: its alt text stands in for it
            i = list(parent).index(img)
            text = alt + (img.tail or "")
            parent.remove(img)
            if i:
                parent[i - 1].tail = (parent[i - 1].tail or "") + text
            else:
                parent.text = (parent.text or "") + text


class _SelfContainedExtension(Extension):
    def __init__(self, base: Path) -> None:
        super().__init__()
        self.base = base

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        # The report's Markdown holds no HTML; anything that looks like a tag is text.
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.preprocessors.register(_ListGroups(md), "list_groups", 5)
        # After the inline patterns (priority 20) have made the <img> elements.
        md.treeprocessors.register(_SelfContained(md, self.base), "self_contained", 15)


def _toc(tokens: list[dict]) -> list[tuple[str, str]]:
    """(id, text) of the level-2 headings, in order, from Python-Markdown's toc tokens."""
    out = []
    for t in tokens:
        if t["level"] == 2:
            out.append((t["id"], t["name"]))
        out += _toc(t["children"])
    return out


def markdown_to_html(md: str, base: Path, title: str = "report") -> str:
    """A self-contained HTML page of `md`; image paths are relative to `base`."""
    conv = markdown.Markdown(extensions=["tables", "fenced_code", TocExtension(), _SelfContainedExtension(base)],
                             output_format="html")
    body = conv.convert(md)
    sections = _toc(conv.toc_tokens)
    if sections:
        nav = '<nav class="toc"><strong>Contents</strong><ol>' + "".join(
            f'<li><a href="#{sid}">{re.sub(r"^[0-9]+[.] ", "", name)}</a></li>' for sid, name in sections) \
            + "</ol></nav>"
        end_h1 = body.find("</h1>")
        body = body[:end_h1 + 5] + "\n" + nav + body[end_h1 + 5:] if end_h1 >= 0 else nav + "\n" + body
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + body + "\n</main>\n</body>\n</html>\n")
