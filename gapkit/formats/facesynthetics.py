"""Microsoft FaceSynthetics layout: ``NNNNNN.png``, ``NNNNNN_ldmks.txt`` (70 rows "x y"), ``NNNNNN_seg.png``.

Landmarks are 0-based pixel (x, y) projections of 3-D points: 68 iBUG-order points and the
two pupils (subject's right, then left).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.files import atomic_write_text
from gapkit.formats.common import FormatInfo, absolute, place_image, scheme_for, write_each
from gapkit.formats.pts import format_coord, parse_xy
from gapkit.images import find_image, image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="facesynthetics", about="Microsoft FaceSynthetics: NNNNNN.png + NNNNNN_ldmks.txt (70 points, 0-based)",
    looks_for="*_ldmks.txt files beside their images", files=("_ldmks.txt",), folder=("*_ldmks.txt",),
    stores=frozenset({"any_scheme"}),
    read_options={"scheme": "scheme name when the point count is ambiguous"},
    write_options={"images": "link | copy | none: how images are placed (default link)"}, detect_rank=20)


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


def read(src: str | Path, scheme: str | None = None) -> Iterator[FaceRecord | Problem]:
    root = Path(src)
    files = [root] if root.is_file() else sorted(root.rglob(f"*{SUFFIX}"))
    base = root.parent if root.is_file() else root
    for f in files:
        try:
            pts = parse_ldmks(f)
            stem = f.with_name(f.name[: -len(SUFFIX)])
            img = find_image(stem)
            if img is None:
                raise FormatError(f, f"no image {stem.name}.png beside the landmarks")
            w, h = image_size(img)
            seg = stem.with_name(stem.name + "_seg.png")
            attrs = {"seg": absolute(seg)} if seg.is_file() else {}
            yield make_record(f, None, id=stem.relative_to(base).as_posix(), image=absolute(img),
                              width=w, height=h, scheme=scheme_for(len(pts), f, explicit=scheme),
                              points=pts, source="facesynthetics", split="", attributes=attrs)
        except FormatError as exc:
            yield exc.problem()


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
