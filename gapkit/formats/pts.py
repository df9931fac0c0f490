"""The iBUG ``.pts`` text format: a header, ``{``, K lines of ``x y``, ``}``; several 300-W
mirrors ship the K ``x y`` lines alone (headerless), which read the same way.

File coordinates are 1-based (Matlab: the centre of the top-left pixel is (1, 1)), so
readers subtract ``origin`` (1 by default) and writers add it back.

Also here, for the three readers of one annotation file per image (300w, menpo,
facesynthetics): where the image of an annotation file is (``image_for``, the ``images``
option) and the refusal of file names that are not UTF-8 (``utf8_name``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, clip
from gapkit.images import IMAGE_EXTENSIONS, find_image, image_size

BOM = b"\xef\xbb\xbf"
_HEADER = re.compile(rb"\A\s*version:\s*[0-9.]+\s*\r?\n\s*n_points:\s*(\d+)\s*\r?\n\s*\{\s*\r?\n", re.S)
IMAGES_OPTION = ("folder of the images: absolute, or relative to each annotation file's folder "
                 "(300-VW: ../imgs); default beside the annotation")


def parse_xy(line: str, path: str | Path, lineno: int) -> tuple[float, float]:
    """One 'x y' text line, with a reason naming the line when it is not two finite numbers."""
    parts = line.split(None, 2)  # at most 3 pieces: a 50 MB line is not split into millions
    if len(parts) != 2:
        raise FormatError(path, f"expected 'x y', got {clip(line.strip())!r}", lineno)
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise FormatError(path, f"not a number in {clip(line.strip())!r}", lineno) from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise FormatError(path, f"non-finite coordinate {clip(line.strip())!r}", lineno)
    return x, y


def _is_xy(line: str) -> bool:
    try:
        parse_xy(line, "", 0)
    except FormatError:
        return False
    return True


def parse_pts(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Parse one .pts file into raw (K, 2) file coordinates, with line-numbered errors."""
    lines = data.decode("utf-8", errors="replace").splitlines()  # BOM already removed
    if _is_xy(next((line for line in lines if line.strip()), "")):
        return _headerless(lines, path)
    if not lines or not lines[0].strip().lower().startswith("version"):
        raise FormatError(path, "missing 'version:' header (nor is it a headerless file of 'x y' lines)", 1)
    k = _n_points(lines, path)
    if len(lines) < 3 or lines[2].strip() != "{":
        raise FormatError(path, "expected '{' after the header", 3)
    rows = []  # grown line by line: the count in the header sizes nothing
    for i in range(k):
        lineno = 4 + i
        if lineno > len(lines) or lines[lineno - 1].strip() == "}":
            raise FormatError(path, f"file is truncated: n_points says {k}, found {i} points", lineno)
        rows.append(parse_xy(lines[lineno - 1], path, lineno))
    end = 4 + k
    if end > len(lines) or lines[end - 1].strip() != "}":
        got = lines[end - 1].strip() if end <= len(lines) else "end of file"
        raise FormatError(path, f"expected '}}' after {k} points, got {clip(got)!r} (more points than n_points?)",
                          end)
    return np.array(rows, dtype=float)


def _n_points(lines: list[str], path: str | Path) -> int:
    """The header's point count, refused at line 2 when it is not a count or when a closed body
    cannot hold it (a file cut short is named where it stops, by the caller)."""
    if len(lines) < 2 or not lines[1].strip().lower().startswith("n_points"):
        raise FormatError(path, "missing 'n_points:' header", 2)
    try:
        k = int(lines[1].split(":", 1)[1])
    except (IndexError, ValueError):
        raise FormatError(path, f"bad n_points line {clip(lines[1].strip())!r}", 2) from None
    if k < 1:
        raise FormatError(path, f"n_points must be a positive count, got {k}", 2)
    room = len(lines) - 3  # the lines after 'version', 'n_points' and '{'
    if k > room:
        close = next((n for n, line in enumerate(lines[3:], start=4) if line.strip() == "}"), None)
        if close is not None:
            raise FormatError(path, f"n_points says {k}, but only {close - 4} lines lie between '{{' "
                                    f"and '}}' (line {close})", 2)
    return k


def _headerless(lines: list[str], path: str | Path) -> np.ndarray:
    """A file of bare 'x y' lines (blank lines allowed): every line must be one, or it is not this."""
    rows = [parse_xy(line, path, n) for n, line in enumerate(lines, start=1) if line.strip()]
    return np.array(rows, dtype=float)


def _fast(data: bytes) -> np.ndarray | None:
    """The common well-formed case in a few vectorised steps; None means 'take the careful path'."""
    m = _HEADER.match(data)
    if m is None:
        return None
    k = int(m.group(1))
    close = data.rfind(b"}")
    if close < m.end() or data[close + 1:].strip():
        return None
    body = data[m.end():close]
    if body.count(b"\n") + (0 if body.endswith(b"\n") else 1) != k:
        return None
    try:
        vals = np.array(body.split(), dtype=float)
    except ValueError:
        return None
    if vals.size != 2 * k or not np.isfinite(vals).all():
        return None
    return vals.reshape(k, 2)


def read_pts(path: str | Path, origin: float = 1.0) -> np.ndarray:
    """Read one .pts into (K, 2) 0-based pixel (x, y); raises FormatError for a bad file."""
    result = read_pts_many([path], origin)[0]
    if isinstance(result, FormatError):
        raise result
    return result


def read_pts_many(paths: Sequence[str | Path], origin: float = 1.0) -> list[np.ndarray | FormatError]:
    """Read many .pts files; each entry is (K, 2) 0-based points or the FormatError for that file."""
    out: list[np.ndarray | FormatError] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError as exc:
            out.append(FormatError(p, f"cannot read: {exc.strerror}"))
            continue
        data = data.removeprefix(BOM)  # Windows editors save one; it is not part of the header
        arr = _fast(data)
        if arr is None:
            try:
                arr = parse_pts(data, p)
            except FormatError as exc:
                out.append(exc)
                continue
        out.append(arr - origin)
    return out


def format_coord(v: float, origin: float) -> str:
    """Decimal text for a 0-based value in a file with ``origin``.

    Six decimals (the 300-W style) when that reads back to exactly ``v``, more when
    needed; values that came from a .pts file always round-trip bit for bit.
    """
    shifted = v + origin
    for digits in (6, *range(7, 18)):
        s = f"{shifted:.{digits}f}"
        if float(s) - origin == v:
            return s
    return repr(shifted)


def dumps_pts(points: np.ndarray, origin: float = 1.0, path: str | Path = "<record>") -> str:
    """Text of a .pts file for (K, 2) 0-based points (no NaN: .pts cannot mark a missing point)."""
    if np.isnan(points).any():
        raise FormatError(path, ".pts cannot store missing (NaN) points")
    rows = "\n".join(f"{format_coord(x, origin)} {format_coord(y, origin)}" for x, y in points.tolist())
    return f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n"


def utf8_name(path: str | Path) -> None:
    """Refuse a file name that is not UTF-8 (legal on Linux: Latin-1 bytes), naming its bytes.

    Python hands such a name over with surrogate escapes, which a record's text fields (id,
    image) cannot hold; the record is refused here with a reason, never dropped unnamed.
    """
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("utf-8", "backslashreplace")
        raise FormatError(path, f"file name is not UTF-8 ({clip(shown, 120)}); gapkit ids and image paths are "
                                "UTF-8 text: rename it (e.g. convmv -f latin1 -t utf8)") from None


def image_for(ann: Path, stem: str, images: str | Path | None, labels_only: bool = False,
              default_ext: str = "") -> tuple[str, int | None, int | None]:
    """(absolute image path, width, height) for the annotation file ``ann`` whose image is named
    ``stem``: beside it, or in ``images`` (absolute, or relative to the annotation's folder).

    Without the images (``labels_only``) nothing is opened and the size is unknown: the path is
    the image found there when one is (a stat, so a manifest written from the labels still finds
    its pixels later), else the stem plus ``default_ext`` (the extension the format names).
    """
    folder = ann.parent if images is None else ann.parent / Path(str(images)).expanduser()  # an absolute one wins
    if labels_only:
        found = find_image(folder / stem)
        return os.path.abspath(found if found is not None else folder / (stem + default_ext)), None, None
    img = find_image(folder / stem)
    if img is None:
        where = "beside this annotation file" if images is None else f"in {clip(str(folder), 120)}"
        raise FormatError(ann, f"no image {where} (looked for {stem} with {', '.join(IMAGE_EXTENSIONS)}; "
                               "the images option names another folder)")
    utf8_name(img)
    w, h = image_size(img)
    return os.path.abspath(img), w, h
