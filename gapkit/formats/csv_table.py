"""CSV tables, one face per row.

gapkit's own layout has a header: ``id,image,width,height,scheme,source,split,bbox_x,bbox_y,
bbox_w,bbox_h,x0,y0,...,x{K-1},y{K-1}`` and optionally ``v0..v{K-1}`` (1 visible, 0 hidden);
an empty cell is a missing value. Image paths are relative to the CSV's folder.
Another header is read when its columns say where things are: an image column (``image_name``,
``file_name``, ...), one x and one y column per point (``part_0_x,part_0_y`` as in the PyTorch
tutorial's ``face_landmarks.csv``, or ``x0,y0``; numbered from any start, in order) and
optionally ``id``, ``width``, ``height``, ``split``; the scheme comes from the point count.
A headerless table ``file_name,x1,y1,...`` (as Datagen's real set ships) is read too:
pass ``headerless=True`` (auto-detected when the first row's cells past the first are numbers).
Coordinates are 0-based pixel (x, y), taken as they stand.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, InputError, Problem
from gapkit.files import atomic_open, check_output
from gapkit.formats.common import (
    FormatInfo,
    absolute,
    checked_size,
    guarded,
    image_size_at,
    is_number,
    one_file,
    scheme_for,
)
from gapkit.formats.pts import format_coord
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="csv", about="CSV, one face per row: gapkit's header layout, another header naming its columns, "
                      "or headerless file_name,x1,y1,...",
    looks_for="a .csv table", files=(".csv",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "any_scheme"}),
    read_options={"images": "image folder (default: the CSV's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "headerless": "true | false (default: detected)",
                  "split": "split name for rows that do not give one"}, detect_rank=90, labels_only=True)


META = ["id", "image", "width", "height", "scheme", "source", "split", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
IMAGE_COLUMNS = ("image", "image_name", "image_path", "imagename", "img", "img_name", "file_name", "filename",
                 "file", "path")
OPTIONAL_COLUMNS = ("id", "width", "height", "split")
_INDEX_AXIS = re.compile(r"(?:[a-z]+_)?(\d+)_([xy])", re.IGNORECASE)   # part_0_x, landmark_12_y, 3_x
_AXIS_INDEX = re.compile(r"([xy])_?(\d+)", re.IGNORECASE)              # x0, y_12


@dataclass(frozen=True)
class Layout:
    """How a row becomes a record: ``gapkit`` (its own header), ``named`` (another header:
    the image column, (x, y) columns per point, optional columns) or ``none`` (no header)."""

    kind: str
    header: list[str] = field(default_factory=list)
    image: int = 0
    pairs: tuple[tuple[int, int], ...] = ()
    optional: dict[str, int] = field(default_factory=dict)
    scheme: str | None = None


def _num(cell: str) -> float:
    return float(cell) if cell.strip() else math.nan


def _size(cell: str | None) -> int | None:
    return int(cell) if cell is not None and cell.strip() else None


def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         headerless: bool | None = None, split: str = "", labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    path = Path(src)
    one_file(path, INFO)
    root = Path(str(images)) if images else path.parent
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = _rows(csv.reader(f))
        first = next((r for r in rows if r[2] is not None or any(c.strip() for c in r[1])), None)
        if first is None:
            return  # nothing here: the job says the file holds no CSV faces
        layout = _layout(path, first, headerless, scheme)
        pending = [first] if layout.kind == "none" else []
        for lineno, row, error in itertools.chain(pending, rows):
            if error is not None:
                yield Problem(str(path), lineno, f"unreadable CSV row: {error}")
            elif any(c.strip() for c in row):
                yield guarded(path, lineno, _record, path, lineno, row, layout, root, split, labels_only)


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


def _layout(path: Path, first: tuple, headerless: bool | None, scheme: str | None) -> Layout:
    """The table's layout from its first row (or the headerless option)."""
    lineno, row, _ = first
    if headerless or row is None:
        return Layout("none", scheme=scheme)
    cells = [c.strip() for c in row]
    missing = [c for c in META[:5] if c not in cells]
    if cells[:1] == ["id"] and not missing:
        return Layout("gapkit", header=cells)
    if headerless is None and (any(is_number(c) for c in cells[1:] if c) or not any(cells[1:])):
        return Layout("none", scheme=scheme)  # the first row is a face (numbers, or none at all), not a header
    try:
        return _named(path, lineno, cells, scheme)
    except InputError as exc:
        if cells[:1] != ["id"]:
            raise
        raise InputError(f"{exc} (gapkit's own header lacks {', '.join(missing)})") from None


def _named(path: Path, lineno: int, cells: list[str], scheme: str | None) -> Layout:
    """A header that is not gapkit's, read by its column names; what cannot be read is one error."""
    where = f"{path}:{lineno}: header not understood"
    low = [c.lower() for c in cells]
    image = next((i for i, c in enumerate(low) if c in IMAGE_COLUMNS), None)
    if image is None:
        raise InputError(f"{where}: no image column (one of {', '.join(IMAGE_COLUMNS)})")
    coords: dict[int, dict[str, int]] = {}
    for col, c in enumerate(low):
        m = _INDEX_AXIS.fullmatch(c) or _AXIS_INDEX.fullmatch(c)
        if m:
            i, axis = (int(m[1]), m[2]) if m.re is _INDEX_AXIS else (int(m[2]), m[1])
            if axis in coords.setdefault(i, {}):
                raise InputError(f"{where}: two {axis} columns for point {i}")
            coords[i][axis] = col
    if not coords:
        raise InputError(f"{where}: no point columns (part_0_x,part_0_y,... or x0,y0,...)")
    start = min(coords)
    gaps = [i for i in range(start, start + len(coords)) if set(coords.get(i, ())) != {"x", "y"}]
    if gaps:
        raise InputError(f"{where}: point columns must be numbered without gaps, each with x and y "
                         f"(point {gaps[0]} is not)")
    try:
        scheme = scheme_for(len(coords), path, lineno, explicit=scheme)
    except FormatError as exc:
        raise InputError(f"{where}: {exc.reason}") from None
    pairs = tuple((coords[i]["x"], coords[i]["y"]) for i in sorted(coords))
    optional = {c: low.index(c) for c in OPTIONAL_COLUMNS if c in low}
    return Layout("named", header=cells, image=image, pairs=pairs, optional=optional, scheme=scheme)


def _record(path: Path, lineno: int, row: list[str], layout: Layout, root: Path, split: str,
            labels_only: bool) -> FaceRecord:
    try:
        if layout.kind == "gapkit":
            return _with_header(path, lineno, row, layout.header, root, split, labels_only)
        if layout.kind == "named":
            return _with_names(path, lineno, row, layout, root, split, labels_only)
        return _headerless(path, lineno, row, root, layout.scheme, split, labels_only)
    except ValueError as exc:
        raise FormatError(path, f"bad value: {exc}", lineno) from None


def _image_path(root: Path, name: str) -> Path:
    img = Path(name)
    return img if img.is_absolute() else root / img


def _sizes(path: Path, lineno: int, img: Path, width: int | None, height: int | None,
           labels_only: bool) -> tuple[int | None, int | None]:
    """The row's size: the table's, checked against the image where it is opened; the image's
    where the table gives none. Without a size in the table the image must be there."""
    if labels_only or (width is not None and height is not None and not img.is_file()):
        return width, height  # a missing image is check_images' finding: the labels still read
    return checked_size(path, lineno, img, width, height)


def _headerless(path: Path, lineno: int, row: list[str], root: Path, scheme: str | None, split: str,
                labels_only: bool) -> FaceRecord:
    name, coords = row[0].strip(), row[1:]
    if len(coords) % 2:
        raise FormatError(path, f"odd number of coordinates ({len(coords)})", lineno)
    pts = np.array([_num(c) for c in coords]).reshape(-1, 2)
    img = root / name
    w, h = (None, None) if labels_only else image_size_at(path, lineno, img)
    return make_record(path, lineno, id=Path(name).with_suffix("").as_posix(), image=absolute(img),
                       width=w, height=h, scheme=scheme_for(len(pts), path, lineno, explicit=scheme),
                       points=pts, source="csv", split=split)


def _with_names(path: Path, lineno: int, row: list[str], layout: Layout, root: Path, split: str,
                labels_only: bool) -> FaceRecord:
    n = len(layout.header)
    if len(row) < n or any(c.strip() for c in row[n:]):
        raise FormatError(path, f"row has {len(row)} cells, the header {n}", lineno)
    cell = {k: row[i].strip() for k, i in layout.optional.items()}
    name = row[layout.image].strip()
    pts = np.array([[_num(row[x]), _num(row[y])] for x, y in layout.pairs])
    img = _image_path(root, name)
    w, h = _sizes(path, lineno, img, _size(cell.get("width")), _size(cell.get("height")), labels_only)
    return make_record(path, lineno, id=cell.get("id") or Path(name).with_suffix("").as_posix(),
                       image=absolute(img), width=w, height=h, scheme=layout.scheme, points=pts,
                       source="csv", split=cell.get("split") or split)


def _with_header(path: Path, lineno: int, row: list[str], header: list[str], root: Path, split: str,
                 labels_only: bool) -> FaceRecord:
    d = dict(zip(header, row, strict=False))
    k = sum(1 for c in header if c.startswith("x") and c[1:].isdigit())
    if any(f"x{i}" not in d or f"y{i}" not in d for i in range(k)):
        raise FormatError(path, f"row has {len(d)} cells, the header {len(header)}", lineno)
    pts = np.array([[_num(d[f"x{i}"]), _num(d[f"y{i}"])] for i in range(k)])
    vis = [d[f"v{i}"].strip() == "1" for i in range(k)] if "v0" in d and d["v0"].strip() else None
    box = [d.get(c, "") for c in META[7:]]
    bbox = tuple(float(v) for v in box) if all(v.strip() for v in box) else None
    img = _image_path(root, d["image"])
    w, h = _sizes(path, lineno, img, _size(d["width"]), _size(d["height"]), labels_only)
    return make_record(path, lineno, id=d["id"], image=absolute(img), width=w, height=h, scheme=d["scheme"],
                       points=pts, visible=vis, bbox=bbox, source=d.get("source", ""), split=d.get("split") or split)


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False) -> Iterator[FaceRecord | Problem]:
    """gapkit CSV with a header; every record must share one scheme (one K). An unknown size
    (labels read without their images) is an empty cell."""
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
            size = ["" if v is None else v for v in (rec.width, rec.height)]
            w.writerow([rec.id, img, *size, rec.scheme, rec.source, rec.split, *box, *coords, *vis])
            yield rec
