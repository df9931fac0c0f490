"""The iBUG ``.pts`` text format: a header, ``{``, K lines of ``x y``, ``}``.

File coordinates are 1-based (Matlab: the centre of the top-left pixel is (1, 1)), so
readers subtract ``origin`` (1 by default) and writers add it back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError

BOM = b"\xef\xbb\xbf"
_HEADER = re.compile(rb"\A\s*version:\s*[0-9.]+\s*\r?\n\s*n_points:\s*(\d+)\s*\r?\n\s*\{\s*\r?\n", re.S)


def parse_xy(line: str, path: str | Path, lineno: int) -> tuple[float, float]:
    """One 'x y' text line, with a reason naming the line when it is not two finite numbers."""
    parts = line.split()
    if len(parts) != 2:
        raise FormatError(path, f"expected 'x y', got {line.strip()!r}", lineno)
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise FormatError(path, f"not a number in {line.strip()!r}", lineno) from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise FormatError(path, f"non-finite coordinate {line.strip()!r}", lineno)
    return x, y


def parse_pts(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Parse one .pts file into raw (K, 2) file coordinates, with line-numbered errors."""
    lines = data.decode("utf-8", errors="replace").splitlines()  # BOM already removed
    if not lines or not lines[0].strip().lower().startswith("version"):
        raise FormatError(path, "missing 'version:' header", 1)
    if len(lines) < 2 or not lines[1].strip().lower().startswith("n_points"):
        raise FormatError(path, "missing 'n_points:' header", 2)
    try:
        k = int(lines[1].split(":", 1)[1])
    except (IndexError, ValueError):
        raise FormatError(path, f"bad n_points line {lines[1].strip()!r}", 2) from None
    if len(lines) < 3 or lines[2].strip() != "{":
        raise FormatError(path, "expected '{' after the header", 3)
    pts = np.empty((k, 2))
    for i in range(k):
        lineno = 4 + i
        if lineno > len(lines) or lines[lineno - 1].strip() == "}":
            raise FormatError(path, f"file is truncated: n_points says {k}, found {i} points", lineno)
        pts[i] = parse_xy(lines[lineno - 1], path, lineno)
    end = 4 + k
    if end > len(lines) or lines[end - 1].strip() != "}":
        got = lines[end - 1].strip() if end <= len(lines) else "end of file"
        raise FormatError(path, f"expected '}}' after {k} points, got {got!r} (more points than n_points?)", end)
    return pts


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
