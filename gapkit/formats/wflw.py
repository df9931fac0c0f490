"""WFLW annotation lists (``list_98pt_rect_attr_{train,test}.txt``).

One face per line: 196 numbers (x1 y1 ... x98 y98, 0-based pixels), the face box
x_min y_min x_max y_max, six 0/1 attributes (pose, expression, illumination, make-up,
occlusion, blur) and the image path relative to ``WFLW_images/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.formats.common import FormatInfo, absolute, on_line
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="wflw", about="WFLW annotation lists: 98 points, face box and six attributes per line",
    looks_for="a WFLW list_98pt_rect_attr_*.txt file", files=(".txt",),
    stores=frozenset({"bbox", "split", "attributes"}),
    read_options={"images": "image folder (default WFLW_images/ beside the list)",
                  "split": "split name for the records (default from the file name)"}, detect_rank=60)


ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
K = 98


def read(src: str | Path, images: str | Path | None = None, split: str = "") -> Iterator[FaceRecord | Problem]:
    path = Path(src)
    if images is None:
        images = path.parent / "WFLW_images" if (path.parent / "WFLW_images").is_dir() else path.parent
    images = Path(images)
    if not split:
        split = "test" if "test" in path.name else "train" if "train" in path.name else ""
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield _record(path, lineno, line, images, split, seen)
            except FormatError as exc:
                yield on_line(exc, path, lineno)


def _record(path: Path, lineno: int, line: str, images: Path, split: str, seen: dict) -> FaceRecord:
    parts = line.split()
    n_expected = 2 * K + 4 + len(ATTRIBUTES) + 1
    if len(parts) != n_expected:
        raise FormatError(path, f"expected {n_expected} fields (196 coordinates, 4 box, 6 attributes, "
                                f"image name), got {len(parts)}", lineno)
    try:
        nums = np.array(parts[: 2 * K + 4], dtype=float)
        flags = [int(v) for v in parts[2 * K + 4: -1]]
    except ValueError:
        raise FormatError(path, "a coordinate, box or attribute field is not a number", lineno) from None
    if not np.isfinite(nums).all():
        raise FormatError(path, "non-finite coordinate or box value", lineno)
    name = parts[-1]
    img = images / name
    w, h = image_size(img)
    x0, y0, x1, y1 = nums[2 * K:]
    n = seen.get(name, 0)
    seen[name] = n + 1
    return make_record(path, lineno, id=f"{Path(name).with_suffix('').as_posix()}#{n}", image=absolute(img),
                       width=w, height=h, scheme="wflw98", points=nums[: 2 * K].reshape(K, 2),
                       bbox=(x0, y0, x1 - x0, y1 - y0), source="wflw", split=split,
                       attributes=dict(zip(ATTRIBUTES, flags, strict=True)))
