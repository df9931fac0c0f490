"""Microsoft FaceSynthetics layout: ``NNNNNN.png``, ``NNNNNN_ldmks.txt`` (70 rows "x y"), ``NNNNNN_seg.png``.

Landmarks are 0-based pixel (x, y) projections of 3-D points: 68 iBUG-order points and the
two pupils (subject's right, then left). The image is ``NNNNNN.png`` beside the landmarks, or in
the ``images`` folder; ``labels_only`` reads without it. ``attributes["seg"]``, when the
segmentation exists, is its path relative to the image's folder (normally ``NNNNNN_seg.png``):
it moves with the tree and names no machine's folders in a manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.files import atomic_write_text
from gapkit.formats.common import FormatInfo, guarded, place_image, scheme_for, write_each
from gapkit.formats.pts import IMAGES_OPTION, format_coord, image_for, parse_xy, utf8_name
from gapkit.records import FaceRecord, make_record
from gapkit.schemes import get_scheme

INFO = FormatInfo(
    name="facesynthetics", about="Microsoft FaceSynthetics: NNNNNN.png + NNNNNN_ldmks.txt (70 points, 0-based)",
    looks_for="*_ldmks.txt files beside their images", files=("_ldmks.txt",), folder=("*_ldmks.txt",),
    stores=frozenset({"any_scheme"}),
    read_options={"scheme": "scheme name when the point count is ambiguous", "images": IMAGES_OPTION},
    write_options={"images": "link | copy | none: how images are placed (default link)"}, detect_rank=20,
    labels_only=True)


SUFFIX = "_ldmks.txt"


def parse_ldmks(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"cannot read: {exc}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rows.append(parse_xy(line, path, lineno))
    if not rows:
        raise FormatError(path, "no landmarks in file")
    return np.array(rows)


def read(src: str | Path, scheme: str | None = None, images: str | Path | None = None,
         labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    root = Path(src)
    files = [root] if root.is_file() else sorted(root.rglob(f"*{SUFFIX}"))
    base = root.parent if root.is_file() else root
    if scheme:
        get_scheme(scheme)  # an unknown name stops the job once, not once per file
    for f in files:
        yield guarded(f, None, _record, f, base, scheme, images, labels_only)


def _record(f: Path, base: Path, scheme: str | None, images: str | Path | None, labels_only: bool) -> FaceRecord:
    utf8_name(f)
    pts = parse_ldmks(f)
    name = f.name[: -len(SUFFIX)]
    img, w, h = image_for(f, name, images, labels_only, default_ext=".png")
    return make_record(f, None, id=f.with_name(name).relative_to(base).as_posix(), image=img,
                       width=w, height=h, scheme=scheme_for(len(pts), f, explicit=scheme),
                       points=pts, source="facesynthetics", split="", attributes=_seg(f, name, Path(img)))


def _seg(f: Path, name: str, img: Path) -> dict:
    """{"seg": path relative to the image's folder} for NAME_seg.png beside the image (else beside
    the landmarks); {} when there is none."""
    for folder in (img.parent, f.parent):
        seg = folder / f"{name}_seg.png"
        if seg.is_file():
            return {"seg": Path(os.path.relpath(os.path.abspath(seg), img.parent)).as_posix()}
    return {}


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False,
          images: str = "link") -> Iterator[FaceRecord | Problem]:
    """Write ``<id>.png`` + ``<id>_ldmks.txt`` (0-based, the FaceSynthetics convention)."""
    def one(rec: FaceRecord, stem: Path) -> None:
        if np.isnan(rec.points).any():
            raise FormatError(rec.id, "_ldmks.txt cannot store missing (NaN) points")
        place_image(rec, stem.with_name(stem.name + (Path(rec.image).suffix.lower() or ".png")), images)
        text = "\n".join(f"{format_coord(x, 0.0)} {format_coord(y, 0.0)}" for x, y in rec.points.tolist())
        atomic_write_text(stem.with_name(stem.name + SUFFIX), text + "\n", overwrite=True)

    yield from write_each(records, Path(out), overwrite, one)
