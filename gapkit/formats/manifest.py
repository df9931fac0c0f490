"""gapkit's own manifest: JSON Lines, one :class:`~gapkit.records.FaceRecord` a line, image
paths relative to the manifest (symlinks kept), so a moved tree still reads.

Points are 0-based pixel (x, y), as gapkit holds them. ``width``/``height`` are checked
against the image when it is there to open (not with ``labels_only``), and taken from it
where a line leaves them out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from gapkit.errors import FormatError, Problem
from gapkit.files import atomic_open
from gapkit.formats.common import FormatInfo, checked_size, guarded, one_file
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="manifest", about="gapkit's own JSON Lines of face records (lossless)",
    looks_for="a .jsonl manifest", files=(".jsonl",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "attributes", "any_scheme"}), detect_rank=10,
    labels_only=True)


def read(src: str | Path, labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    yield from read_manifest(src, labels_only=labels_only)


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False) -> Iterator[FaceRecord | Problem]:
    with ManifestWriter(out, overwrite=overwrite) as w:
        for rec in records:
            w.write(rec)
            yield rec


def read_manifest(path: str | Path, labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """Stream records from a .jsonl manifest; bad lines come out as Problems."""
    path = Path(path)
    one_file(path, INFO)
    base = Path(os.path.abspath(path.parent))  # symlinks kept: paths stay as the user gave them
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield guarded(path, lineno, _record, path, lineno, line, base, labels_only)


def _record(path: Path, lineno: int, line: str, base: Path, labels_only: bool) -> FaceRecord:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON: {exc.msg}", lineno) from None
    except RecursionError:
        raise FormatError(path, "JSON nested too deeply", lineno) from None
    if not isinstance(d, dict):
        raise FormatError(path, "a manifest line must be a JSON object", lineno)
    if isinstance(d.get("image"), str) and not os.path.isabs(d["image"]):
        d["image"] = os.path.normpath(base / d["image"])
    rec = make_record(path, lineno, **d)
    if labels_only or (rec.width and rec.height) or not os.path.isfile(rec.image):
        # Both sizes given are compared with the image where images are opened (check_images);
        # a missing image is that check's finding too: the labels still read.
        return rec
    w, h = checked_size(path, lineno, rec.image, rec.width, rec.height)  # the side it gives must agree
    return make_record(path, lineno, **(d | {"width": w, "height": h}))  # sizes the line left out


class ManifestWriter:
    """Write records to a .jsonl manifest atomically: the file appears only when closed cleanly."""

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.path = Path(path)
        self._ctx = atomic_open(self.path, "w", overwrite=overwrite)
        self._dir = Path(os.path.abspath(self.path.parent))
        self.count = 0

    def __enter__(self) -> ManifestWriter:
        self._f = self._ctx.__enter__()
        return self

    def write(self, rec: FaceRecord) -> None:
        self._f.write(rec.to_json(self._dir) + "\n")
        self.count += 1

    def __exit__(self, *exc: Any) -> bool | None:
        return self._ctx.__exit__(*exc)


def write_manifest(records: Iterable[FaceRecord], path: str | Path, overwrite: bool = False) -> int:
    with ManifestWriter(path, overwrite=overwrite) as w:
        for rec in records:
            w.write(rec)
    return w.count
