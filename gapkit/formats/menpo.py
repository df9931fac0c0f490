"""menpo landmark files: ``.pts`` (1-based, as menpo treats iBUG files; headerless ones too)
and ``.ljson``.

LJSON (version 3) stores points as **[y, x]** and null for a missing point; gapkit's points
are 0-based (x, y). The face group is chosen by its size, not its order: the 68-point group,
or with the ``scheme`` option the group of that scheme's size. Other groups (e.g. ``pupils``)
are kept, in (x, y), under ``attributes["ljson_groups"]``. Images sit beside the landmark
file, or in the ``images`` folder; ``labels_only`` reads without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.formats.common import FormatInfo, guarded
from gapkit.formats.pts import IMAGES_OPTION, image_for, read_pts, utf8_name
from gapkit.records import FaceRecord, make_record
from gapkit.schemes import get_scheme

INFO = FormatInfo(
    name="menpo", about="menpo landmark files: .pts (1-based) and .ljson (points as [y, x])",
    looks_for="*.ljson or *.pts files beside their images", files=(".ljson",), folder=("*.ljson",),
    stores=frozenset({"missing", "attributes", "any_scheme"}),
    read_options={"scheme": "scheme name for files that are not 68-point faces", "images": IMAGES_OPTION},
    detect_rank=40, labels_only=True)


# menpo's .pts files carry no scheme; only the 68-point face is a safe default.
MENPO_DEFAULTS = {68: "ibug68"}


def read(src: str | Path, scheme: str | None = None, images: str | Path | None = None,
         labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    root = Path(src)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".pts", ".ljson"))
    base = root.parent if root.is_file() else root
    if scheme:
        get_scheme(scheme)  # an unknown name stops the job once, not once per file
    for f in files:
        yield guarded(f, None, _record, f, base, scheme, images, labels_only)


def _record(f: Path, base: Path, scheme: str | None, images: str | Path | None, labels_only: bool) -> FaceRecord:
    utf8_name(f)
    img, w, h = image_for(f, f.stem, images, labels_only)
    attrs: dict = {}
    if f.suffix == ".pts":
        pts = read_pts(f)
    else:
        pts, attrs = _read_ljson(f, scheme)
    if scheme is None and len(pts) not in MENPO_DEFAULTS:
        raise FormatError(f, f"{len(pts)} points: not a 68-point face; pass the scheme option if it is one")
    return make_record(f, None, id=f.relative_to(base).with_suffix("").as_posix(), image=img,
                       width=w, height=h, scheme=scheme or MENPO_DEFAULTS[len(pts)], points=pts,
                       source="menpo", split="", attributes=attrs)


def _read_ljson(path: Path, scheme: str | None) -> tuple[np.ndarray, dict]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    except (RecursionError, UnicodeDecodeError, OSError) as exc:
        raise FormatError(path, f"cannot read: {type(exc).__name__}") from None
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise FormatError(path, "LJSON needs a non-empty 'groups' object (version 3)")
    shapes = {name: _group_points(path, name, g) for name, g in groups.items()}
    main = _face_group(path, shapes, scheme)
    others = {n: [[None if np.isnan(v) else float(v) for v in p] for p in s.tolist()]
              for n, s in shapes.items() if n != main}
    return shapes[main], ({"ljson_groups": others, "ljson_group": main} if others else {"ljson_group": main})


def _group_points(path: Path, name: str, group: object) -> np.ndarray:
    """One group's points as (K, 2) (x, y), NaN where null."""
    try:
        raw = group["landmarks"]["points"]
        yx = np.array([[np.nan, np.nan] if p is None or None in p else p for p in raw], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise FormatError(path, f"group {name!r}: landmarks.points must be a list of [y, x]") from None
    if yx.ndim != 2 or yx.shape[1] != 2:
        raise FormatError(path, f"group {name!r}: points must be [y, x] pairs")
    return yx[:, ::-1].copy()  # [y, x] -> (x, y)


def _face_group(path: Path, shapes: dict[str, np.ndarray], scheme: str | None) -> str:
    """The face: the first group with the scheme's point count (68 without a scheme), whatever
    groups come before it (a 5-point first group is not the face)."""
    want = get_scheme(scheme).num_points if scheme else next(iter(MENPO_DEFAULTS))
    main = next((n for n, s in shapes.items() if len(s) == want), None)
    if main is None:
        sizes = ", ".join(f"{n}: {len(s)}" for n, s in shapes.items())
        hint = f"scheme {scheme}" if scheme else "a 68-point face; pass the scheme option for another scheme"
        raise FormatError(path, f"no group has the {want} points of {hint} (groups {sizes})")
    return main
