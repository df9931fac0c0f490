"""dlib imglab XML: ``<image file=.. width=.. height=..><box ...><part name='00' x= y=/>``.

Coordinates are 0-based integer pixels; ``part`` names are 0-based point indices.
A part left out is a missing point (NaN).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.formats.common import FormatInfo, absolute, scheme_for
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="dlib", about="dlib imglab XML: <image file> <box> <part name x y>",
    looks_for="a dlib imglab .xml file", files=(".xml",),
    stores=frozenset({"missing", "bbox", "any_scheme"}),
    read_options={"images": "image folder (default: the XML's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "num_points": "point count when the highest part name is not the last point"}, detect_rank=80)



def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         num_points: int | None = None) -> Iterator[FaceRecord | Problem]:
    path = Path(src)
    root = Path(images) if images else path.parent
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        yield Problem(str(path), exc.position[0], f"not valid XML: {exc}")
        return
    except OSError as exc:
        yield Problem(str(path), None, f"cannot read: {exc}")
        return
    for image in tree.getroot().iter("image"):
        name = image.get("file")
        if not name:
            yield Problem(str(path), None, "<image> without a file attribute")
            continue
        for n, box in enumerate(image.iter("box")):
            try:
                yield _record(path, root, image, name, n, box, scheme, num_points)
            except FormatError as exc:
                yield exc.problem()


def _record(path, root, image, name, n, box, scheme, num_points) -> FaceRecord:
    parts = box.findall("part")
    if not parts:
        raise FormatError(path, f"{name} box {n}: no <part> landmarks (a boxes-only file?)")
    try:
        idx = [int(p.get("name")) for p in parts]
        xy = [(float(p.get("x")), float(p.get("y"))) for p in parts]
    except (TypeError, ValueError):
        raise FormatError(path, f"{name} box {n}: part name, x or y is not a number") from None
    if not np.isfinite(xy).all():  # dlib leaves a missing part out; it never writes nan or inf
        raise FormatError(path, f"{name} box {n}: non-finite part coordinate")
    k = num_points or (68 if max(idx) < 68 and max(idx) >= 5 else max(idx) + 1)
    pts = np.full((k, 2), np.nan)
    for i, p in zip(idx, xy, strict=True):
        if not 0 <= i < k:
            raise FormatError(path, f"{name} box {n}: part {i} out of range for {k} points")
        pts[i] = p
    img = root / name
    w, h = image_size(img)
    if image.get("width") and (int(image.get("width")), int(image.get("height"))) != (w, h):
        raise FormatError(path, f"{name}: XML says {image.get('width')}x{image.get('height')}, file is {w}x{h}")
    try:
        bbox = tuple(float(box.get(a)) for a in ("left", "top", "width", "height"))
    except (TypeError, ValueError):
        bbox = None
    return make_record(path, None, id=f"{Path(name).with_suffix('').as_posix()}#{n}", image=absolute(img),
                       width=w, height=h, scheme=scheme_for(k, path, explicit=scheme), points=pts, bbox=bbox,
                       source="dlib", split="")
