"""CSV tables, one face per row.

gapkit's own layout has a header: ``id,image,width,height,scheme,source,split,bbox_x,bbox_y,
bbox_w,bbox_h,x0,y0,...,x{K-1},y{K-1}`` and optionally ``v0..v{K-1}`` (1 visible, 0 hidden);
an empty cell is a missing value. Image paths are relative to the CSV's folder.
A headerless table ``file_name,x1,y1,...`` (as Datagen's real set ships) is read too:
pass ``headerless=True`` (auto-detected when the first cell is no column name).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.files import atomic_open, check_output
from gapkit.formats.common import FormatInfo, absolute, on_line, scheme_for
from gapkit.formats.pts import format_coord
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="csv", about="CSV, one face per row: gapkit's header layout, or headerless file_name,x1,y1,...",
    looks_for="a .csv table", files=(".csv",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "any_scheme"}),
    read_options={"images": "image folder (default: the CSV's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "headerless": "true | false (default: detected)",
                  "split": "split name for headerless rows"}, detect_rank=90)


META = ["id", "image", "width", "height", "scheme", "source", "split", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]


def _num(cell: str) -> float:
    return float(cell) if cell.strip() else math.nan


def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         headerless: bool | None = None, split: str = "") -> Iterator[FaceRecord | Problem]:
    path = Path(src)
    root = Path(images) if images else path.parent
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = csv.reader(f)
        try:
            first = next(rows)
        except StopIteration:
            yield Problem(str(path), None, "empty CSV")
            return
        has_header = first[:1] == ["id"] if headerless is None else not headerless
        header = first if has_header else None
        if header is not None:
            missing = [c for c in META[:5] if c not in header]
            if missing:
                yield Problem(str(path), 1, f"header lacks columns {', '.join(missing)}")
                return
        pending = [] if has_header else [(1, first, None)]
        for lineno, row, error in [*pending, *_rows(rows)]:
            if error is not None:
                yield Problem(str(path), lineno, f"unreadable CSV row: {error}")
                continue
            if not any(c.strip() for c in row):
                continue
            try:
                if header is None:
                    yield _headerless(path, lineno, row, root, scheme, split)
                else:
                    yield _with_header(path, lineno, dict(zip(header, row, strict=False)), header, root)
            except FormatError as exc:
                yield on_line(exc, path, lineno)
            except ValueError as exc:
                yield Problem(str(path), lineno, f"bad value: {exc}")


def _rows(rows) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line, row, None) or (line, None, why): one unparsable row (a field over the csv
    module's size limit, a stray quote) is one problem, not the end of the file."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            yield rows.line_num, None, str(exc)
            continue
        yield rows.line_num, row, None


def _headerless(path: Path, lineno: int, row: list[str], root: Path, scheme: str | None, split: str) -> FaceRecord:
    name, coords = row[0].strip(), row[1:]
    if len(coords) % 2:
        raise FormatError(path, f"odd number of coordinates ({len(coords)})", lineno)
    pts = np.array([_num(c) for c in coords]).reshape(-1, 2)
    img = root / name
    w, h = image_size(img)
    return make_record(path, lineno, id=Path(name).with_suffix("").as_posix(), image=absolute(img),
                       width=w, height=h, scheme=scheme_for(len(pts), path, lineno, explicit=scheme),
                       points=pts, source="csv", split=split)


def _with_header(path: Path, lineno: int, d: dict, header: list[str], root: Path) -> FaceRecord:
    k = sum(1 for c in header if c.startswith("x") and c[1:].isdigit())
    if any(f"x{i}" not in d or f"y{i}" not in d for i in range(k)):
        raise FormatError(path, f"row has {len(d)} cells, the header {len(header)}", lineno)
    pts = np.array([[_num(d[f"x{i}"]), _num(d[f"y{i}"])] for i in range(k)])
    vis = [d[f"v{i}"].strip() == "1" for i in range(k)] if f"v{0}" in d and d["v0"].strip() else None
    box = [d.get(c, "") for c in META[7:]]
    bbox = tuple(float(v) for v in box) if all(v.strip() for v in box) else None
    img = Path(d["image"])
    img = img if img.is_absolute() else root / img
    return make_record(path, lineno, id=d["id"], image=absolute(img), width=int(d["width"]),
                       height=int(d["height"]), scheme=d["scheme"], points=pts, visible=vis, bbox=bbox,
                       source=d.get("source", ""), split=d.get("split", ""))


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False) -> Iterator[FaceRecord | Problem]:
    """gapkit CSV with a header; every record must share one scheme (one K)."""
    out = Path(out)
    check_output(out, overwrite)
    base = Path(absolute(out.parent))
    with atomic_open(out, "w", overwrite=overwrite) as f:
        w = csv.writer(f, lineterminator="\n")
        k = None
        for rec in records:
            if k is None:
                k = len(rec.points)
                w.writerow(META + [f"{a}{i}" for i in range(k) for a in "xy"] + [f"v{i}" for i in range(k)])
            if len(rec.points) != k:
                yield Problem(rec.id, None, f"CSV holds one scheme: {len(rec.points)} points, not {k}")
                continue
            try:
                img = Path(rec.image).relative_to(base).as_posix()
            except ValueError:
                img = rec.image
            box = [format_coord(v, 0.0) for v in rec.bbox] if rec.bbox else [""] * 4
            coords = ["" if math.isnan(v) else format_coord(v, 0.0) for v in rec.points.ravel().tolist()]
            vis = [str(int(v)) for v in rec.visible] if rec.visible is not None else [""] * k
            w.writerow([rec.id, img, rec.width, rec.height, rec.scheme, rec.source, rec.split, *box, *coords, *vis])
            yield rec
