"""The one way from readers to records: every consumer (convert, validate, the benchmark,
the gap report, `adapt`, FiftyOne) loads faces through here.

A ``DataSource`` is one input (a manifest, or a folder / file of a named format, with its
splits and reader options). ``stream`` walks one or more sources record by record, checks
what the readers cannot (an input that holds nothing, unknown split names, duplicate ids)
and maps every record into a target scheme; ``load`` collects them into a ``FaceSet``
with stacked (N, K, 2) points in 0-based pixel (x, y).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from gapkit.errors import (
    ConfigError,
    FormatError,
    GapkitError,
    InputError,
    Problem,
    StrictStop,
    internal_problem,
)
from gapkit.formats import check_options, get_format, guess_format
from gapkit.formats.common import one_file
from gapkit.images import image_size
from gapkit.records import FaceRecord
from gapkit.schemes import Mapper, find_mapper
from gapkit.settings import Settings
from gapkit.version import __version__

Progress = Callable[[int], None]


class DataSource(Settings):
    """One input: ``path`` (a manifest, or a file or folder of ``format``), the splits to keep
    (None: all), reader options (the -O of the command line) and ``labels_only``: read the
    labels without opening the images (records have no width and height unless the file gives
    them; a format that cannot is refused by name)."""

    path: Path
    format: str | None = None
    splits: list[str] | None = None
    options: dict = Field(default_factory=dict)
    labels_only: bool = False


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
    not_faces: Counter = field(default_factory=Counter)  # entries that hold no face, by reason: not errors

    @property
    def skipped(self) -> int:
        return len(self.problems)

    @property
    def internal(self) -> int:
        """Records lost to an exception gapkit did not expect (a bug, not bad input)."""
        return sum(p.kind == "internal" for p in self.problems)

    def add(self, problem: Problem, strict: bool = False) -> None:
        if problem.kind == "not_a_face":
            self.not_faces[problem.reason] += 1
            return
        self.problems.append(problem)
        if strict:
            raise StrictStop(problem)

    def to_dict(self) -> dict:
        return {"gapkit_version": __version__, "read": self.read, "written": self.written,
                "filtered_out": self.filtered, "skipped": self.skipped, "internal_errors": self.internal,
                "not_faces": dict(self.not_faces),
                "schemes": dict(self.schemes), "splits": dict(self.splits), "sources": dict(self.sources),
                "stats": self.stats, "problems": [p.to_dict() for p in self.problems]}


def as_sources(src: DataSource | str | Path | Sequence[DataSource | str | Path]) -> list[DataSource]:
    """One or more sources from what a caller holds: DataSources, or paths (format guessed)."""
    items = src if isinstance(src, list | tuple) else [src]
    return [s if isinstance(s, DataSource) else DataSource(path=Path(s)) for s in items]


def _listed(counts: Counter) -> str:
    return ", ".join(f"{k or '(none)'} ({v})" for k, v in sorted(counts.items()))


def open_source(src: DataSource):
    """(format name, reader module) for a source, after checking that it exists and that its
    options are ones the reader declares. Raises InputError / ConfigError (exit 2)."""
    if not src.path.exists() and not src.path.is_symlink():
        raise InputError(f"{src.path}: no such file or folder")
    fmt = src.format or guess_format(src.path)
    mod = get_format(fmt)
    check_options(fmt, src.options)
    fi = mod.INFO
    if src.labels_only and not fi.labels_only:
        raise ConfigError(f"{fmt} cannot read labels without their images yet; drop --no-images")
    if src.path.is_file() and not fi.files:
        raise InputError(f"{src.path} is a file, but {fmt} reads a folder of {fi.looks_for}")
    if not fi.folder:
        one_file(src.path, fi)
    if src.splits and fi.splits:
        unknown = sorted(set(src.splits) - set(fi.splits))
        if unknown:
            raise ConfigError(f"unknown split{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                              f"{src.path}; present: {_present(src, mod)}")
    return fmt, mod


def _present(src: DataSource, mod) -> str:
    counts = Counter(r.split for r in _read(mod, src) if isinstance(r, FaceRecord))
    return _listed(counts) or "no readable records"


def _read(mod, src: DataSource) -> Iterator[FaceRecord | Problem]:
    """The reader's stream; a file that cannot be opened at all (a symlink loop, a device)
    stops the job with its name rather than a traceback. A reader that fails outside its
    per-record guard loses the rest of that source, named as an internal problem, never the run."""
    options = src.options | ({"labels_only": True} if src.labels_only else {})
    try:
        yield from mod.read(src.path, **options)
    except OSError as exc:
        raise InputError(f"{exc.filename or src.path}: cannot read ({exc.strerror or exc})") from None
    except GapkitError:
        raise  # the source as a whole cannot be read as asked: one clear line
    except Exception as exc:  # noqa: BLE001 - the last boundary: the job goes on with the next source
        yield internal_problem(src.path, None, exc)


class _Mapping:
    """Records mapped into one target scheme (mappers come from find_mapper's cache); a scheme
    that cannot be mapped is a per-record problem (a mixed manifest keeps its mappable records)."""

    def __init__(self, target: str | None, via: str | None):
        self.target, self.via = target, via
        self._failed: dict[str, GapkitError] = {}  # a scheme's error, found once

    def error(self) -> GapkitError | None:
        return next(iter(self._failed.values()), None)

    def __call__(self, rec: FaceRecord) -> FaceRecord | Problem:
        if not self.target or rec.scheme == self.target and not self.via:
            return rec
        if rec.scheme not in self._failed:
            try:
                mapper = find_mapper(rec.scheme, self.target, self.via)
            except GapkitError as exc:
                self._failed[rec.scheme] = exc
            else:
                return map_record(rec, mapper)
        return Problem(rec.image, None, f"record {rec.id!r}: {self._failed[rec.scheme]}")


def map_record(rec: FaceRecord, mapper: Mapper) -> FaceRecord:
    """A copy of ``rec`` in the mapper's target scheme; provenance goes to attributes."""
    if mapper.source == mapper.target:
        return rec
    attrs = dict(rec.attributes, mapped_from=rec.scheme, mapping=mapper.name)
    vis = mapper.visibility(np.array(rec.visible)).tolist() if rec.visible is not None else None
    return rec.model_copy(update={"scheme": mapper.target, "points": mapper(rec.points), "visible": vis,
                                  "attributes": attrs})


def stream(sources: DataSource | str | Path | Sequence[DataSource | str | Path], *, scheme: str | None = None,
           mapping: str | None = None, strict: bool = False, report: Report | None = None,
           progress: Progress | None = None, check_images: bool | Literal["decode"] = False,
           min_points: float = 0.0) -> Iterator[FaceRecord]:
    """Good records of every source, in order, mapped to ``scheme`` when given.

    Bad records, duplicate ids (across all sources), unmappable schemes, images that do not
    open (``check_images``: header and end marker; ``"decode"``: every pixel too) and records with fewer than
    ``min_points`` (a fraction) of their points left after mapping go to ``report.problems``.
    Raises InputError when a source holds nothing of its format, ConfigError when a
    requested split matched no record (listing the splits present).
    """
    report = report if report is not None else Report()
    checks = _Checks(_Mapping(scheme, mapping), check_images, min_points)
    yielded = 0
    for src in as_sources(sources):
        fmt, mod = open_source(src)
        keep = set(src.splits) if src.splits else None
        present: Counter = Counter()
        items = 0
        for item in _read(mod, src):
            items += 1
            if progress:
                progress(1)
            if isinstance(item, Problem):
                report.add(item, strict)
                continue
            report.read += 1
            present[item.split] += 1
            if keep is not None and item.split not in keep:
                report.filtered += 1
                continue
            rec = checks(item, src)
            if isinstance(rec, Problem):
                report.add(rec, strict)
                continue
            report.schemes[rec.scheme] += 1
            report.splits[rec.split] += 1
            report.sources[rec.source] += 1
            yielded += 1
            yield rec
        _check_source(src, fmt, mod, items, keep, present)
    if not yielded and checks.mapper.error() is not None:
        raise checks.mapper.error()  # no record could be mapped: the scheme asked for is the problem, not the data


@dataclass
class _Checks:
    """What a read record passes before it is yielded: an id not seen before (across all
    sources), an image that opens (with ``check_images``), a scheme that maps and at least
    ``min_points`` of its points left after mapping."""

    mapper: _Mapping
    check_images: bool | Literal["decode"]
    min_points: float
    seen: set[str] = field(default_factory=set)

    def __call__(self, item: FaceRecord, src: DataSource) -> FaceRecord | Problem:
        if item.id in self.seen:
            return Problem(str(src.path), None, f"duplicate record id {item.id!r} (image {item.image})")
        self.seen.add(item.id)
        if self.check_images:
            try:
                size = image_size(item.image, decode=self.check_images == "decode")
            except FormatError as exc:
                return exc.problem()
            given = (item.width, item.height)
            if None not in given and given != tuple(size):
                return Problem(item.image, None, f"record {item.id!r} says the image is {given[0]}x{given[1]}, "
                                                 f"the file is {size[0]}x{size[1]}")
        rec = self.mapper(item)
        if isinstance(rec, Problem) or not self.min_points:
            return rec
        left = float((~np.isnan(rec.points).any(axis=1)).mean())
        if left < self.min_points:
            return Problem(rec.image, None, f"record {rec.id!r} keeps only {left:.0%} of its points in {rec.scheme}")
        return rec


def _check_source(src: DataSource, fmt: str, mod, items: int, keep: set[str] | None, present: Counter) -> None:
    """After a source is read: it held something of its format, and every split asked for matched."""
    if items == 0:
        raise InputError(f"{src.path} holds nothing {fmt} reads: looked for {mod.INFO.looks_for}")
    missing = sorted(keep - set(present)) if keep is not None else []
    if missing:
        raise ConfigError(f"split{'s' if len(missing) > 1 else ''} {', '.join(missing)} matched no "
                          f"record in {src.path}; present: {_listed(present) or 'none'}")


@dataclass
class FaceSet:
    """Records of one scheme in memory, with their points stacked: (N, K, 2), 0-based pixel (x, y)."""

    records: list[FaceRecord]
    scheme: str | None = None

    def __post_init__(self) -> None:
        schemes = {r.scheme for r in self.records}
        if self.scheme is None and len(schemes) == 1:
            self.scheme = schemes.pop()

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FaceRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> FaceRecord:
        return self.records[i]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def images(self) -> list[str]:
        return [r.image for r in self.records]

    @property
    def points(self) -> np.ndarray:
        if not self.records:
            return np.zeros((0, 0, 2))
        if len({r.scheme for r in self.records}) > 1:
            raise ConfigError("this face set mixes schemes; load it with scheme= to stack its points")
        return np.stack([r.points for r in self.records])

    def take(self, index: Iterable[int]) -> FaceSet:
        return FaceSet([self.records[i] for i in index], self.scheme)

    def subset(self, n: int | None, seed: int | Sequence[int] = 0) -> FaceSet:
        """``n`` records drawn without replacement by a seeded permutation, in their original
        order; all of them when n is None or not smaller than the set."""
        if n is None or n >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.take(keep)


def load(sources: DataSource | str | Path | Sequence[DataSource | str | Path], *, scheme: str | None = None,
         mapping: str | None = None, strict: bool = False, progress: Progress | None = None,
         check_images: bool | Literal["decode"] = False, min_points: float = 0.0,
         require: str | None = None) -> tuple[FaceSet, Report]:
    """Every good record of the sources in memory (see ``stream``), and the report of the rest.
    With ``require`` (what the set is, for the message), an empty set is an InputError."""
    report = Report()
    recs = list(stream(sources, scheme=scheme, mapping=mapping, strict=strict, report=report, progress=progress,
                       check_images=check_images, min_points=min_points))
    if require and not recs:
        raise empty_set_error(require, as_sources(sources), report)
    return FaceSet(recs, scheme), report


def empty_set_error(what: str, sources: Sequence[DataSource], report: Report) -> InputError:
    """The one error for a face set with no usable record: what it is, where, and why."""
    where = ", ".join(str(s.path) for s in sources)
    why = f"; {report.skipped} skipped, first: {report.problems[0]}" if report.problems else ""
    return InputError(f"{what}: no usable face records in {where}{why}")
