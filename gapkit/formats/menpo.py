"""menpo landmark files: ``.pts`` (1-based, as menpo treats iBUG files) and ``.ljson``.

LJSON (version 3) stores points as **[y, x]** and null for a missing point. The group
whose size matches a known scheme becomes the record; other groups (e.g. ``pupils``)
are kept, in (x, y), under ``attributes["ljson_groups"]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import FormatError, Problem
from gapkit.formats.common import SCHEME_BY_COUNT, FormatInfo, absolute
from gapkit.formats.pts import read_pts
from gapkit.images import find_image, image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="menpo", about="menpo landmark files: .pts (1-based) and .ljson (points as [y, x])",
    looks_for="*.ljson or *.pts files beside their images", files=(".ljson",), folder=("*.ljson",),
    stores=frozenset({"missing", "attributes", "any_scheme"}),
    read_options={"scheme": "scheme name for files that are not 68-point faces"}, detect_rank=40)


# menpo's .pts files carry no scheme; only the 68-point face is a safe default.
MENPO_DEFAULTS = {68: "ibug68"}


def read(src: str | Path, scheme: str | None = None) -> Iterator[FaceRecord | Problem]:
    root = Path(src)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix in (".pts", ".ljson"))
    base = root.parent if root.is_file() else root
    for f in files:
        try:
            img = find_image(f.with_suffix(""))
            if img is None:
                raise FormatError(f, "no image beside this landmark file")
            w, h = image_size(img)
            attrs: dict = {}
            if f.suffix == ".pts":
                pts = read_pts(f)
            else:
                pts, attrs = _read_ljson(f, scheme)
            if scheme is None and len(pts) not in MENPO_DEFAULTS:
                raise FormatError(f, f"{len(pts)} points: not a 68-point face; pass the scheme option if it is one")
            yield make_record(f, None, id=f.relative_to(base).with_suffix("").as_posix(), image=absolute(img),
                              width=w, height=h, scheme=scheme or MENPO_DEFAULTS[len(pts)], points=pts,
                              source="menpo", split="", attributes=attrs)
        except FormatError as exc:
            yield exc.problem()


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
    shapes = {}
    for name, g in groups.items():
        try:
            raw = g["landmarks"]["points"]
            yx = np.array([[np.nan, np.nan] if p is None or None in p else p for p in raw], dtype=float)
        except (KeyError, TypeError, ValueError):
            raise FormatError(path, f"group {name!r}: landmarks.points must be a list of [y, x]") from None
        if yx.ndim != 2 or yx.shape[1] != 2:
            raise FormatError(path, f"group {name!r}: points must be [y, x] pairs")
        shapes[name] = yx[:, ::-1].copy()  # [y, x] -> (x, y)
    want = {scheme} if scheme else set(SCHEME_BY_COUNT.values())
    main = next((n for n, s in shapes.items() if SCHEME_BY_COUNT.get(len(s)) in want), None)
    if main is None:
        sizes = ", ".join(f"{n}: {len(s)}" for n, s in shapes.items())
        raise FormatError(path, f"no group matches a known scheme ({sizes})")
    others = {n: [[None if np.isnan(v) else float(v) for v in p] for p in s.tolist()]
              for n, s in shapes.items() if n != main}
    return shapes[main], ({"ljson_groups": others, "ljson_group": main} if others else {"ljson_group": main})
