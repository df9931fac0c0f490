"""Bulk conversion and validation: stream records, map schemes, write, collect problems.

Memory stays flat: records flow one at a time from reader to writer; only ids (for
duplicate detection) and running statistics are kept.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapkit import __version__
from gapkit.errors import FormatError, GapkitError, Problem
from gapkit.files import atomic_write_text
from gapkit.formats import get_format
from gapkit.images import image_size
from gapkit.records import FaceRecord
from gapkit.schemes import Mapper, find_mapper

Progress = Callable[[int], None]


class StrictStop(GapkitError):
    """--strict: the first problem stops the job."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


@dataclass
class Report:
    """What a bulk job did: counts, problems (each with path, line, reason)."""

    read: int = 0
    written: int = 0
    filtered: int = 0
    problems: list[Problem] = field(default_factory=list)
    schemes: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    stats: dict = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def to_dict(self) -> dict:
        return {"gapkit_version": __version__, "read": self.read, "written": self.written,
                "filtered_out": self.filtered, "skipped": self.skipped,
                "schemes": dict(self.schemes), "splits": dict(self.splits), "sources": dict(self.sources),
                "stats": self.stats, "problems": [p.to_dict() for p in self.problems]}


def _records(items: Iterable[FaceRecord | Problem], report: Report, strict: bool,
             progress: Progress | None, splits: set[str] | None) -> Iterator[FaceRecord]:
    seen: set[str] = set()
    for item in items:
        if progress:
            progress(1)
        if isinstance(item, Problem):
            report.problems.append(item)
            if strict:
                raise StrictStop(item)
            continue
        report.read += 1
        if item.id in seen:
            p = Problem(item.image, None, f"duplicate record id {item.id!r}")
            report.problems.append(p)
            if strict:
                raise StrictStop(p)
            continue
        seen.add(item.id)
        if splits and item.split not in splits:
            report.filtered += 1
            continue
        yield item


def map_record(rec: FaceRecord, mapper: Mapper) -> FaceRecord:
    """A copy of ``rec`` in the mapper's target scheme; provenance goes to attributes."""
    if mapper.source == mapper.target:
        return rec
    attrs = dict(rec.attributes, mapped_from=rec.scheme, mapping=mapper.name)
    vis = mapper.visibility(np.array(rec.visible)).tolist() if rec.visible is not None else None
    return rec.model_copy(update={"scheme": mapper.target, "points": mapper(rec.points), "visible": vis,
                                  "attributes": attrs})


def convert(src: str | Path, out: str | Path, from_fmt: str, to_fmt: str, *, scheme: str | None = None,
            mapping: str | None = None, splits: Iterable[str] | None = None, overwrite: bool = False,
            strict: bool = False, read_options: dict | None = None, write_options: dict | None = None,
            progress: Progress | None = None) -> Report:
    """Read ``src`` as ``from_fmt``, optionally map to ``scheme``, write ``out`` as ``to_fmt``."""
    reader = get_format(from_fmt)
    writer = get_format(to_fmt, write=True)
    report = Report()
    mappers: dict[str, Mapper] = {}

    def mapped(records: Iterable[FaceRecord]) -> Iterator[FaceRecord]:
        for rec in records:
            if scheme:
                if rec.scheme not in mappers:
                    mappers[rec.scheme] = find_mapper(rec.scheme, scheme, via=mapping)
                rec = map_record(rec, mappers[rec.scheme])
            report.schemes[rec.scheme] += 1
            report.splits[rec.split] += 1
            report.sources[rec.source] += 1
            yield rec

    items = reader.read(src, **(read_options or {}))
    records = mapped(_records(items, report, strict, progress, set(splits) if splits else None))
    for result in writer.write(records, out, overwrite=overwrite, **(write_options or {})):
        if isinstance(result, Problem):
            report.problems.append(result)
            if strict:
                raise StrictStop(result)
        else:
            report.written += 1
    return report


def validate(src: str | Path, from_fmt: str, *, strict: bool = False, deep: bool = False,
             read_options: dict | None = None, progress: Progress | None = None) -> Report:
    """Check a dataset without writing: counts, schemes, sizes, off-image points, NaN, duplicates."""
    report = Report()
    sizes = []
    outside_records = outside_points = nan_records = nan_points = 0
    shapes: dict[bytes, str] = {}  # 16-byte digests, not shapes
    duplicate_shapes = 0
    items = get_format(from_fmt).read(src, **(read_options or {}))
    for rec in _records(items, report, strict, progress, None):
        if deep:
            try:
                image_size(rec.image, deep=True)
            except FormatError as exc:
                report.problems.append(exc.problem())
                if strict:
                    raise StrictStop(exc.problem()) from None
                continue
        report.schemes[rec.scheme] += 1
        report.splits[rec.split] += 1
        report.sources[rec.source] += 1
        sizes.append((rec.width, rec.height))
        out = int(rec.outside().sum())
        outside_records += out > 0
        outside_points += out
        nans = int(np.isnan(rec.points).any(axis=1).sum())
        nan_records += nans > 0
        nan_points += nans
        key = hashlib.blake2b(rec.image.encode() + np.round(np.nan_to_num(rec.points), 3).tobytes(),
                              digest_size=16).digest()
        if key in shapes:
            duplicate_shapes += 1
            report.problems.append(Problem(rec.image, None, f"record {rec.id!r} repeats {shapes[key]!r} "
                                                             "(same image, same points)"))
        else:
            shapes[key] = rec.id
        report.written += 1
    wh = np.array(sizes) if sizes else np.zeros((0, 2))
    report.stats = {
        "records": report.written,
        "image_width": [int(wh[:, 0].min()), int(wh[:, 0].max())] if len(wh) else None,
        "image_height": [int(wh[:, 1].min()), int(wh[:, 1].max())] if len(wh) else None,
        "records_with_points_outside_image": outside_records, "points_outside_image": outside_points,
        "records_with_missing_points": nan_records, "missing_points": nan_points,
        "duplicate_shapes": duplicate_shapes,
    }
    return report


def write_report(report: Report, path: str | Path, overwrite: bool = False) -> None:
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n", overwrite=overwrite)


def load_records(src: str | Path, fmt: str | None = None, *, splits: Iterable[str] | None = None,
                 read_options: dict | None = None, progress: Progress | None = None) -> tuple[list[FaceRecord], Report]:
    """Every good record of a manifest or format folder in memory, and the report of the bad ones."""
    from gapkit.formats import guess_format

    report = Report()
    fmt = fmt or guess_format(str(src))
    items = get_format(fmt).read(src, **(read_options or {}))
    recs = list(_records(items, report, False, progress, set(splits) if splits else None))
    for r in recs:
        report.schemes[r.scheme] += 1
    return recs, report
