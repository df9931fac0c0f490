"""gapkit's own manifest: JSON Lines of FaceRecords (see gapkit.records)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from gapkit.errors import Problem
from gapkit.formats.common import FormatInfo
from gapkit.records import FaceRecord, ManifestWriter, read_manifest

INFO = FormatInfo(
    name="manifest", about="gapkit's own JSON Lines of face records (lossless)",
    looks_for="a .jsonl manifest", files=(".jsonl",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "attributes", "any_scheme"}))



def read(src: str | Path) -> Iterator[FaceRecord | Problem]:
    yield from read_manifest(src)


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False) -> Iterator[FaceRecord | Problem]:
    with ManifestWriter(out, overwrite=overwrite) as w:
        for rec in records:
            w.write(rec)
            yield rec
