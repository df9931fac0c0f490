"""WFLW annotation lists, in both layouts the release ships.

``list_98pt_rect_attr_{train,test}.txt``: one face per line, 207 fields: 196 numbers
(x1 y1 ... x98 y98), the face box x_min y_min x_max y_max, six 0/1 attributes (pose,
expression, illumination, make-up, occlusion, blur) and the image path relative to
``WFLW_images/`` (found beside the list or up to two folders above, as the release unpacks).
``list_98pt_test/list_98pt_test*.txt``: 197 fields, the 196 numbers and the image path (no
box, no attributes); a subset list (``..._blur.txt``) holds the faces whose attribute of that
name is 1, which the records carry.

Coordinates are 0-based pixel (x, y), taken as they stand (the release states no 1-based
origin, unlike 300-W's .pts; mmpose's WFLW-to-COCO converter also copies them unshifted).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem, clip
from gapkit.formats.common import FormatInfo, absolute, guarded, image_size_at, is_number, one_file
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="wflw", about="WFLW annotation lists: 98 points, with or without face box and six attributes per line",
    looks_for="a WFLW list_98pt_rect_attr_*.txt or list_98pt_test*.txt file", files=(".txt",),
    stores=frozenset({"bbox", "split", "attributes"}),
    read_options={"images": "image folder (default WFLW_images/ beside the list or up to two folders above it)",
                  "split": "split name for the records (default from the file name)"}, detect_rank=60,
    labels_only=True)


ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")
K = 98
FULL = 2 * K + 4 + len(ATTRIBUTES) + 1   # list_98pt_rect_attr_*.txt
POINTS_ONLY = 2 * K + 1                  # list_98pt_test/*.txt
# the subset lists' names for the attributes
SUBSETS = {"largepose": "pose", "expression": "expression", "illumination": "illumination",
           "makeup": "make_up", "occlusion": "occlusion", "blur": "blur"}


def read(src: str | Path, images: str | Path | None = None, split: str = "",
         labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    path = Path(src)
    one_file(path, INFO)
    images = Path(str(images)) if images is not None else _images_folder(path)
    if not split:
        split = "test" if "test" in path.name else "train" if "train" in path.name else ""
    subset = re.fullmatch(r"list_98pt_test_(\w+)\.txt", path.name)
    implied = {SUBSETS[subset[1]]: 1} if subset and subset[1] in SUBSETS else {}
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield guarded(path, lineno, _record, path, lineno, line, images, split, seen,
                              implied, labels_only)


def _images_folder(path: Path) -> Path:
    """WFLW_images/ beside the list or above it (the release puts the lists two folders down,
    in WFLW_annotations/<list folder>/), else the list's own folder."""
    for folder in list(path.parents)[:3]:
        if (folder / "WFLW_images").is_dir():
            return folder / "WFLW_images"
    return path.parent


def _fields(path: Path, lineno: int, parts: list[str]) -> tuple[np.ndarray, tuple | None, dict]:
    """(points, box as x, y, w, h or None, attributes) of one line's fields."""
    if len(parts) not in (FULL, POINTS_ONLY):
        raise FormatError(path, f"expected {FULL} fields (196 coordinates, 4 box, 6 attributes, image name) or "
                                f"{POINTS_ONLY} (196 coordinates, image name), got {len(parts)}", lineno)
    full = len(parts) == FULL
    if is_number(parts[-1]):  # a longer line cut short would pass a coordinate off as the image
        raise FormatError(path, f"the last field must be the image path, got the number {clip(parts[-1], 30)}",
                          lineno)
    try:
        nums = np.array(parts[: 2 * K + 4 if full else 2 * K], dtype=float)
        flags = [int(v) for v in parts[2 * K + 4: -1]] if full else []
    except ValueError:
        raise FormatError(path, "a coordinate, box or attribute field is not a number", lineno) from None
    if not np.isfinite(nums).all():
        raise FormatError(path, "non-finite coordinate or box value", lineno)
    if not full:
        return nums.reshape(K, 2), None, {}
    x0, y0, x1, y1 = nums[2 * K:]
    return nums[: 2 * K].reshape(K, 2), (x0, y0, x1 - x0, y1 - y0), dict(zip(ATTRIBUTES, flags, strict=True))


def _record(path: Path, lineno: int, line: str, images: Path, split: str, seen: dict, implied: dict,
            labels_only: bool) -> FaceRecord:
    parts = line.split()
    pts, bbox, attributes = _fields(path, lineno, parts)
    name = parts[-1]
    img = images / name
    w, h = (None, None) if labels_only else image_size_at(path, lineno, img)
    n = seen.get(name, 0)
    seen[name] = n + 1
    return make_record(path, lineno, id=f"{Path(name).with_suffix('').as_posix()}#{n}", image=absolute(img),
                       width=w, height=h, scheme="wflw98", points=pts, bbox=bbox, source="wflw", split=split,
                       attributes=attributes or dict(implied))
