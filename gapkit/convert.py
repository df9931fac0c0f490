"""Bulk conversion and validation: stream records, map schemes, write, collect problems.

Memory stays flat: records flow one at a time from reader to writer; only ids (for
duplicate detection) and running statistics are kept.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gapkit.errors import Problem
from gapkit.faceset import DataSource, Progress, Report, stream
from gapkit.files import atomic_write_text
from gapkit.formats import check_options, get_format

__all__ = ["Report", "convert", "validate", "write_report"]


def convert(src: str | Path, out: str | Path, from_fmt: str | None, to_fmt: str, *, scheme: str | None = None,
            mapping: str | None = None, splits: Iterable[str] | None = None, overwrite: bool = False,
            strict: bool = False, read_options: dict | None = None, write_options: dict | None = None,
            progress: Progress | None = None, labels_only: bool = False) -> Report:
    """Read ``src`` as ``from_fmt``, optionally map to ``scheme``, write ``out`` as ``to_fmt``.

    Every image is opened (header and end marker, so a truncated file is a problem, not a
    record), unless ``labels_only``: then no image is read and a writer that places images
    must be told ``images=none``; nothing is written when no record is good."""
    writer = get_format(to_fmt, write=True)
    check_options(to_fmt, write_options or {}, write=True)
    report = Report()
    source = DataSource(path=Path(src), format=from_fmt, splits=list(splits) if splits else None,
                        options=dict(read_options or {}), labels_only=labels_only)
    records = stream(source, scheme=scheme, mapping=mapping, strict=strict, report=report, progress=progress,
                     check_images=not labels_only)
    first = next(records, None)
    if first is None:
        return report
    for result in writer.write(itertools.chain([first], records), out, overwrite=overwrite, **(write_options or {})):
        if isinstance(result, Problem):
            report.add(result, strict)
        else:
            report.written += 1
    return report


def validate(src: str | Path, from_fmt: str | None, *, strict: bool = False, splits: Iterable[str] | None = None,
             read_options: dict | None = None, progress: Progress | None = None, labels_only: bool = False) -> Report:
    """Check a dataset without writing: every image decoded (none with ``labels_only``), counts,
    schemes, sizes, off-image points, NaN, duplicate ids and duplicate shapes."""
    report = Report()
    sizes = []
    outside_records = outside_points = nan_records = nan_points = 0
    shapes: dict[bytes, str] = {}  # 16-byte digests, not shapes
    duplicate_shapes = 0
    source = DataSource(path=Path(src), format=from_fmt, splits=list(splits) if splits else None,
                        options=dict(read_options or {}), labels_only=labels_only)
    for rec in stream(source, strict=strict, report=report, progress=progress,
                      check_images=False if labels_only else "decode"):
        if rec.width is not None and rec.height is not None:
            sizes.append((rec.width, rec.height))
        out = int(rec.outside().sum())
        outside_records += out > 0
        outside_points += out
        nans = int(np.isnan(rec.points).any(axis=1).sum())
        nan_records += nans > 0
        nan_points += nans
        key = hashlib.blake2b(os.fsencode(rec.image) + np.round(np.nan_to_num(rec.points), 3).tobytes(),
                              digest_size=16).digest()
        if key in shapes:
            duplicate_shapes += 1
            report.add(Problem(rec.image, None, f"record {rec.id!r} repeats {shapes[key]!r} "
                                                "(same image, same points)"), strict)
        else:
            shapes[key] = rec.id
        report.written += 1
    wh = np.array(sizes) if sizes else np.zeros((0, 2))
    report.stats = {
        "records": report.written,
        "image_width": [int(wh[:, 0].min()), int(wh[:, 0].max())] if len(wh) else None,
        "image_height": [int(wh[:, 1].min()), int(wh[:, 1].max())] if len(wh) else None,
        "records_without_image_size": report.written - len(sizes),
        "records_with_points_outside_image": outside_records, "points_outside_image": outside_points,
        "records_with_missing_points": nan_records, "missing_points": nan_points,
        "duplicate_shapes": duplicate_shapes,
    }
    return report


def write_report(report: Report, path: str | Path, overwrite: bool = False) -> None:
    atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n", overwrite=overwrite)
