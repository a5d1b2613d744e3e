"""Validation of GSN files: labels.csv rows and PNG images, checked before anything is trusted.

Every problem is a `DataError` whose one-line message names the file (or `labels.csv row N`) and how to fix it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shapecount import labels as L
from shapecount.errors import DataError

LABELS_NAME = "labels.csv"
HEADER: tuple[str, ...] = ("name", *L.TYPES)
SIDE = 28
MAX_SIDE = 1024  # decompression-bomb guard: larger PNGs are refused from their header, never decoded
MAX_IMAGE_BYTES = 8 << 20  # a 28x28 PNG is a few hundred bytes; anything this big is not one
MAX_LABELS_BYTES = 64 << 20
ACCEPTED_MODES = ("L", "LA", "RGB", "RGBA", "1", "P")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FIX_ROW = "each row is name,squares,circles,up,right,down,left with two non-zero counts summing to 10"
FIX_IMAGE = "replace it with the original 28x28 PNG from the GSN dataset, or remove its row from labels.csv"


def one_line(text: object) -> str:
    return " ".join(str(text).split())


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with control characters (newlines included) escaped, so an error naming it stays one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


# ---------------------------------------------------------------------------------------------------------
# labels.csv
# ---------------------------------------------------------------------------------------------------------

def parse_labels(raw: bytes, where: str) -> tuple[list[str], np.ndarray]:
    """Validate labels.csv bytes -> (names, int64 counts (N, 6)). `where` names the file in errors.

    Errors name `<where> row R (line L)`: R counts data rows from 1, L is the line in the file (header = 1).
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(where, f"is not UTF-8 text (byte {e.start})", "save it as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": a lone CR ends a line, as csv expects
    lines = _csv_rows(reader, where)
    header = next(lines, None)
    while header is not None and not any(f.strip() for f in header):
        header = next(lines, None)  # tolerate leading blank lines
    if header is None:
        raise DataError(where, "is empty", f"the first line must be the header {','.join(HEADER)}")
    if tuple(f.strip().lower() for f in header) != HEADER:
        raise DataError(where, f"has header {one_line(','.join(header))!r}, expected {','.join(HEADER)!r}",
                        "fix the first line of labels.csv")
    names: list[str] = []
    rows: list[list[int]] = []
    first_row: dict[str, str] = {}
    for fields_ in lines:
        if not any(f.strip() for f in fields_):
            continue  # blank lines (e.g. a trailing newline) carry nothing
        row_where = f"{where} row {len(rows) + 1} (line {reader.line_num})"
        name, counts = _parse_row(fields_, row_where)
        if name in first_row:
            raise DataError(row_where, f"duplicate name {name!r} (first in {first_row[name]})",
                            "each image may be listed once; remove one of the rows")
        first_row[name] = f"row {len(rows) + 1}"
        names.append(name)
        rows.append(counts)
    if not rows:
        raise DataError(where, "has a header but no rows", FIX_ROW)
    return names, np.asarray(rows, dtype=np.int64).reshape(-1, L.NUM_TYPES)


def _csv_rows(reader: Any, where: str) -> Iterator[list[str]]:
    """The reader's rows; a CSV syntax error (e.g. a field over csv's size limit) is a DataError."""
    try:
        yield from reader
    except csv.Error as e:
        raise DataError(f"{where} line {reader.line_num}", f"is not valid CSV: {one_line(e)}",
                        "save it as plain CSV, one row per line") from None


_UNSAFE_NAME = re.compile(r"[/\\]|" + _CONTROL.pattern)


def _parse_row(fields_: list[str], where: str) -> tuple[str, list[int]]:
    if len(fields_) != len(HEADER):
        raise DataError(where, f"has {len(fields_)} fields, expected {len(HEADER)}", FIX_ROW)
    name = fields_[0].strip()
    # Names are file names next to labels.csv: a path here could read files outside the dataset.
    if not name or name in (".", "..") or _UNSAFE_NAME.search(name):
        raise DataError(where, f"image name {name!r} is not a plain file name", FIX_ROW)
    counts = []
    for type_name, value in zip(L.TYPES, fields_[1:]):
        v = value.strip()
        if not re.fullmatch(r"[+-]?[0-9]+", v):
            raise DataError(where, f"{type_name} count {one_line(v)!r} is not an integer", FIX_ROW)
        # int() refuses over 4300 digits; a count that long is out of range anyway
        c = int(v) if len(v.lstrip("+-").lstrip("0")) <= 9 else None
        if c is None or not 0 <= c <= L.TOTAL:
            shown = c if c is not None else f"{v[:12]}... ({len(v)} digits)"
            raise DataError(where, f"{type_name} count {shown} is outside 0..{L.TOTAL}", FIX_ROW)
        counts.append(c)
    present = [t for t, c in zip(L.TYPES, counts) if c]
    if len(present) != 2:
        plural = "" if len(present) == 1 else "s"
        raise DataError(where, f"has {len(present)} shape type{plural} with non-zero counts "
                               f"({', '.join(present) or 'none'}), expected exactly 2", FIX_ROW)
    if sum(counts) != L.TOTAL:
        raise DataError(where, f"counts sum to {sum(counts)}, expected {L.TOTAL}", FIX_ROW)
    return name, counts


# ---------------------------------------------------------------------------------------------------------
# PNG decoding
# ---------------------------------------------------------------------------------------------------------

def png_size(raw: bytes, where: str) -> tuple[int, int]:
    """(width, height) from the PNG header, without decoding; DataError if it is not a PNG."""
    if not raw:
        raise DataError(where, "is an empty file, not a PNG", FIX_IMAGE)
    if not raw.startswith(PNG_SIGNATURE):
        raise DataError(where, f"is not a PNG file, it starts with {raw[:8]!r}", FIX_IMAGE)
    if len(raw) < 33 or raw[12:16] != b"IHDR":
        raise DataError(where, "is a truncated or corrupt PNG, no IHDR header", FIX_IMAGE)
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


# What PIL raises on damaged PNG data (DecompressionBombError derives from none of the others).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error,
                  Image.DecompressionBombError)


def decode_png(raw: bytes, where: str) -> np.ndarray:
    """PNG bytes -> uint8 (28, 28) gray. Modes 1, L, LA, P, RGB, RGBA are converted with PIL's `convert("L")`
    (alpha is dropped: GSN images are opaque). Size is checked from the header before anything is decoded."""
    width, height = png_size(raw, where)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise DataError(where, f"is {width}x{height} pixels, over the {MAX_SIDE}x{MAX_SIDE} limit; "
                               "not decoded", FIX_IMAGE)
    if (width, height) != (SIDE, SIDE):
        raise DataError(where, f"is {width}x{height} pixels, expected {SIDE}x{SIDE}", FIX_IMAGE)
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as im:
            if im.mode not in ACCEPTED_MODES:
                raise DataError(where, f"has unsupported image mode {im.mode!r} "
                                       f"(accepted: {', '.join(ACCEPTED_MODES)})", "save it as an 8-bit PNG")
            im.load()
            # P via RGBA: PIL warns when a palette with transparency goes straight to L.
            gray = (im.convert("RGBA") if im.mode == "P" else im).convert("L")
            arr = np.array(gray, dtype=np.uint8)  # a writable copy
    except DataError:
        raise
    except _DECODE_ERRORS as e:
        raise DataError(where, f"is a corrupt or truncated PNG: {one_line(e) or type(e).__name__}",
                        FIX_IMAGE) from None
    if arr.shape != (SIDE, SIDE):  # header and data disagree: not a PNG we can trust
        raise DataError(where, f"decodes to {arr.shape}, expected ({SIDE}, {SIDE})", FIX_IMAGE)
    return arr


def read_bytes(path: Path) -> bytes:
    """A file's bytes; an unreadable file (permissions, I/O error) is a DataError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(str(path), f"cannot be read: {one_line(e.strerror or e)}",
                        "check that the file exists and is readable") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One PNG file -> uint8 (28, 28) gray, with the same checks as the dataset's images."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "does not exist", "give the path of a 28x28 PNG")
    if not p.is_file():
        raise DataError(str(p), "is not a file", "give the path of a 28x28 PNG")
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise DataError(str(p), f"is {size} bytes, too big for a 28x28 PNG", "give the path of a 28x28 PNG")
    return decode_png(read_bytes(p), str(p))
