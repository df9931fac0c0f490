"""dlib imglab XML: ``<image file=.. width=.. height=..><box ...><part name='00' x= y=/>``.

Coordinates are 0-based pixels, as dlib writes them (integers; floats are read too); ``part``
names are 0-based point indices. A part left out is a missing point (NaN).

The point count is the file's, not a box's: the count most boxes name (a box's highest part
name, plus one) must be some scheme's point count (``-O scheme`` or ``-O num_points`` say it otherwise); a set
that matches none is refused, never read as a scheme it is not. ``<box ignore='1'>`` is
imglab's ignore flag: skipped as "not a face" (counted, not an error). ``width`` and
``height`` on ``<image>`` are whole pixels ('128.0' is 128); each one given is checked against
the image, and in label-only mode the pair, when both are given, is the record's size.

A problem in one box names it: ``line`` is the box's 0-based index in the file, the reason
names the image file and the box's index within that image.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import ConfigError, FormatError, InputError, Problem, clip
from gapkit.formats.common import (
    SCHEME_BY_COUNT,
    FormatInfo,
    absolute,
    checked_size,
    guarded,
    one_file,
    scheme_for,
)
from gapkit.records import FaceRecord, make_record
from gapkit.schemes import get_scheme

INFO = FormatInfo(
    name="dlib", about="dlib imglab XML: <image file> <box> <part name x y>",
    looks_for="a dlib imglab .xml file", files=(".xml",),
    stores=frozenset({"missing", "bbox", "any_scheme"}),
    read_options={"images": "image folder (default: the XML's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "num_points": "point count when the highest part name is not the last point"}, detect_rank=80,
    labels_only=True)


def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         num_points: int | None = None, labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """``labels_only``: no image is opened; the size comes from ``<image width height>`` when given."""
    path = Path(src)
    one_file(path, INFO)
    root = Path(images) if images else path.parent
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        yield Problem(str(path), exc.position[0], f"not valid XML: {exc}")
        return
    except (OSError, ValueError) as exc:
        yield Problem(str(path), None, f"cannot read: {type(exc).__name__}: {exc}")
        return
    boxes = [(image, n, box) for image in tree.getroot().iter("image") for n, box in enumerate(image.iter("box"))]
    k = _point_count(path, [b for _, _, b in boxes if not _ignored(b)], scheme, num_points)
    for i, (image, n, box) in enumerate(boxes):
        got = guarded(path, i, _record, path, root, image, n, box, k, scheme, labels_only)
        yield _named(got, path, i, image.get("file"), n)


def _ignored(box: ET.Element) -> bool:
    return (box.get("ignore") or "0").strip().lower() not in ("0", "false")


def _point_count(path: Path, boxes: list[ET.Element], scheme: str | None, num_points) -> int | None:
    """The set's point count: -O num_points, else the scheme's, else the highest part name + 1,
    which must be a known scheme's count. None when no box has a usable part name."""
    if num_points is not None:
        try:
            k = int(num_points)
        except (TypeError, ValueError):
            raise ConfigError(f"-O num_points must be a whole number, got {num_points!r}") from None
        try:
            scheme_for(k, path, explicit=scheme)  # before a (k, 2) array is made for every box
        except FormatError as exc:
            raise InputError(f"{path}: -O num_points={k}: {exc.reason}") from None
    elif scheme:
        return get_scheme(scheme).num_points
    else:
        k = _highest_part(path, boxes)
    return k


def _highest_part(path: Path, boxes: list[ET.Element]) -> int | None:
    """The count most boxes name (each box's highest part name + 1), which must be a known
    scheme's count (None: no part names). One mistyped part name then makes its own box a
    problem ("out of range"), not every face of the file another scheme."""
    per_box = Counter()
    for b in boxes:
        names = [i for i in (_index(p.get("name")) for p in b.findall("part")) if i is not None and i >= 0]
        if names:
            per_box[max(names) + 1] += 1
    if not per_box:
        return None
    # a scheme's count before any other, then the most boxes, then the larger (missing last parts)
    k = max(per_box, key=lambda c: (c in SCHEME_BY_COUNT, per_box[c], c))
    if k not in SCHEME_BY_COUNT:
        known = ", ".join(f"{c} ({s})" for c, s in sorted(SCHEME_BY_COUNT.items()))
        raise InputError(f"{path}: its parts are named 00..{k - 1} ({k} points), which matches no face "
                         f"scheme's point count ({known}); pass -O scheme=NAME, or -O num_points=N "
                         "when the last points are never labelled")
    return k


def _index(name: str | None) -> int | None:
    try:
        return int(name)
    except (TypeError, ValueError):
        return None


def _named(got: FaceRecord | Problem, path: Path, i: int, name: str | None, n: int) -> FaceRecord | Problem:
    """The box's index in the file as the problem's line; the image file and the box's index in
    that image in the reason. A not-a-face box keeps its short reason: the report counts by reason."""
    if isinstance(got, FaceRecord):
        return got
    if got.kind == "not_a_face":
        return Problem(str(path), i, got.reason, got.kind)
    other = f"{got.path}: " if got.path != str(path) else ""
    where = f"image {clip(repr(name), 80)} box {n}" if name else f"<image> without a file, box {n}"
    return Problem(str(path), i, f"{where}: {other}{got.reason}", got.kind, got.detail)


def _record(path: Path, root: Path, image: ET.Element, n: int, box: ET.Element, k: int | None,
            scheme: str | None, labels_only: bool) -> FaceRecord | Problem:
    if _ignored(box):
        return Problem(str(path), None, "box marked ignore (imglab's ignore flag)", kind="not_a_face")
    name = image.get("file")
    if not name:
        raise FormatError(path, "<image> has no file attribute")
    pts = _points(path, box, k)
    img = root / name
    w, h = _size(path, image)
    if labels_only:
        w, h = (w, h) if w and h else (None, None)  # a size is a pair: half of one places no point
    else:
        w, h = checked_size(path, None, img, w, h)
    try:
        bbox = tuple(float(box.get(a)) for a in ("left", "top", "width", "height"))
    except (TypeError, ValueError):
        bbox = None
    return make_record(path, None, id=f"{Path(name).with_suffix('').as_posix()}#{n}", image=absolute(img),
                       width=w, height=h, scheme=scheme_for(len(pts), path, explicit=scheme), points=pts,
                       bbox=bbox, source="dlib", split="")


def _points(path: Path, box: ET.Element, k: int | None) -> np.ndarray:
    parts = box.findall("part")
    if not parts:
        raise FormatError(path, "no <part> landmarks (a boxes-only file?)")
    try:
        idx = [int(p.get("name")) for p in parts]
        xy = [(float(p.get("x")), float(p.get("y"))) for p in parts]
    except (TypeError, ValueError):
        raise FormatError(path, "part name, x or y is not a number") from None
    if not np.isfinite(xy).all():  # dlib leaves a missing part out; it never writes nan or inf
        raise FormatError(path, "non-finite part coordinate")
    if len(set(idx)) != len(idx):
        raise FormatError(path, "a part name appears twice")
    k = k or 0
    pts = np.full((k, 2), np.nan)
    for i, p in zip(idx, xy, strict=True):
        if not 0 <= i < k:
            raise FormatError(path, f"part {i} out of range for {k} points")
        pts[i] = p
    return pts


def _size(path: Path, image: ET.Element) -> tuple[int | None, int | None]:
    """``<image width height>`` as whole pixels; None where it is not given."""
    size = []
    for side in ("width", "height"):
        text = image.get(side)
        try:
            value = float(text) if text is not None else None
        except ValueError:
            value = math.nan
        if value is not None and not (value > 0 and value.is_integer()):
            raise FormatError(path, f"<image {side}='{clip(text, 40)}'> is not a whole number of pixels")
        size.append(None if value is None else int(value))
    return size[0], size[1]
