"""Helpers shared by the format modules (not a format)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from gapkit.errors import (
    ConfigError,
    FormatError,
    GapkitError,
    InputError,
    OutputExistsError,
    Problem,
    clip,
    internal_problem,
)
from gapkit.images import image_size
from gapkit.records import FaceRecord
from gapkit.schemes import get_scheme

T = TypeVar("T")

# What a format can store, as FormatInfo.stores names it.
CAPABILITIES = {
    "missing": "missing (NaN) points",
    "visibility": "per-point visibility",
    "bbox": "a face box",
    "split": "a split name",
    "attributes": "free attributes",
    "any_scheme": "any landmark scheme",
}


@dataclass(frozen=True)
class FormatInfo:
    """What a format module declares about itself; guess_format, the -O check and
    `gapkit formats` read this, never the module's code."""

    name: str
    about: str                                      # one plain-text line
    looks_for: str                                  # what the reader looks for, to say what was not found
    files: tuple[str, ...] = ()                     # suffixes of a one-file dataset (".jsonl")
    folder: tuple[str, ...] = ()                    # rglob patterns that mark a folder of this format
    stores: frozenset[str] = frozenset()            # keys of CAPABILITIES
    read_options: Mapping[str, str] = field(default_factory=dict)   # -O name -> help
    write_options: Mapping[str, str] = field(default_factory=dict)
    splits: tuple[str, ...] = ()                    # the fixed split names, when the layout defines them
    detect_rank: int = 50                           # guess_format tries lower ranks first: specific layouts
    labels_only: bool = False                       # read(..., labels_only=True) works without the images

    def __post_init__(self) -> None:
        unknown = set(self.stores) - set(CAPABILITIES)
        if unknown:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(unknown)}")


def guarded(path: str | Path, line: int | None, build: Callable[..., T], *args, **kwargs) -> T | Problem:
    """``build(*args, **kwargs)`` for one record, where nothing it raises ends the run: a
    FormatError is the record's problem; any other exception is an internal problem naming the
    place (a reader bug must not lose every other record of the job). Other gapkit errors (a
    setting that cannot work) still stop the job."""
    try:
        return build(*args, **kwargs)
    except FormatError as exc:
        return exc.problem()
    except OverflowError as exc:  # a number in the input too large for a float: bad input, not a bug
        return Problem(str(path), line, f"a number is too large to read ({exc})")
    except GapkitError:
        raise  # a setting that cannot work for any record stops the job with one line
    except Exception as exc:  # noqa: BLE001 - the boundary: turned into a named problem, not lost
        return internal_problem(path, line, exc)


def on_line(exc: FormatError, path: Path, lineno: int) -> Problem:
    """A one-file format's problem at its own file and line, naming the image when that is the trouble."""
    if exc.path == str(path):
        return exc.problem()
    return Problem(str(path), lineno, f"{clip(exc.path, 120)}: {exc.reason}")


def absolute(path: str | Path) -> str:
    """An absolute path as given: symlinks are kept, so a moved tree with its manifest still reads."""
    return os.path.abspath(path)


# Default scheme for a bare point count, used when a file names none.
SCHEME_BY_COUNT = {68: "ibug68", 70: "facesynthetics70", 98: "wflw98", 29: "cofw29", 19: "aflw19",
                   106: "lapa106", 468: "mediapipe468", 5: "dlib5", 51: "ibug51"}


def scheme_for(k: int, path: str | Path, line: int | None = None, explicit: str | None = None) -> str:
    if explicit:
        want = get_scheme(explicit).num_points
        if want != k:
            raise FormatError(path, f"scheme {explicit} has {want} points, the file has {k}", line)
        return explicit
    if k not in SCHEME_BY_COUNT:
        raise FormatError(path, f"{k} points match no known face scheme; pass the scheme option", line)
    return SCHEME_BY_COUNT[k]


def safe_relpath(record_id: str) -> PurePosixPath:
    """A record id as a relative output path, refusing escapes from the output folder."""
    p = PurePosixPath(record_id.replace("#", "_").replace(":", "_"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise FormatError(record_id, "record id cannot be used as an output path")
    return p


def prepare_dir(out: Path, overwrite: bool) -> None:
    """An output folder must be new or empty unless overwriting."""
    if out.exists() and not out.is_dir():
        raise GapkitError(f"{out} exists and is not a folder")
    # scandir stops at the first entry; Path.iterdir lists the whole folder, and `gapkit sim`
    # calls this once per face it writes into a folder of up to 100k (it went quadratic).
    if not overwrite and out.is_dir() and _has_entries(out):
        raise OutputExistsError(f"{out} is not empty; pass --overwrite to write into it")
    out.mkdir(parents=True, exist_ok=True)


def _has_entries(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return next(it, None) is not None


def write_each(records: Iterable[FaceRecord], out: Path, overwrite: bool,
               write_one: Callable[[FaceRecord, Path], None]) -> Iterator[FaceRecord | Problem]:
    """Folder writers: prepare ``out``, write record by record, turn per-record failures into Problems."""
    prepare_dir(out, overwrite)
    for rec in records:
        done = guarded(rec.image, None, write_one, rec, out / safe_relpath(rec.id))
        yield done if isinstance(done, Problem) else rec


IMAGE_MODES = ("link", "copy", "none")


def place_image(rec: FaceRecord, dest: Path, mode: str = "link") -> None:
    """Put the record's image at ``dest``: hard link when possible (cheap), else copy; the file a
    symlink points to, never the link (a relative link would dangle in the output); then check
    that what was written is the image."""
    if mode not in IMAGE_MODES:
        raise ConfigError(f"images={mode!r}: use one of {', '.join(IMAGE_MODES)}")
    if mode == "none":
        return
    src = Path(rec.image).resolve()
    if not src.is_file():
        raise FormatError(rec.image, "image file is missing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and dest.samefile(src):
        return
    # beside dest first, then one rename: an overwritten image is never half there
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        try:
            if mode != "link":
                raise OSError
            os.link(src, tmp)
        except OSError:
            shutil.copy2(src, tmp)
        if tmp.stat().st_size != src.stat().st_size:
            raise FormatError(dest, f"the written image is {tmp.stat().st_size} bytes, {src} is {src.stat().st_size}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def one_file(path: Path, info: FormatInfo) -> None:
    """A one-file format given a folder: the job cannot start (the same words as for the reverse)."""
    if path.is_dir():
        raise InputError(f"{path} is a folder, but {info.name} reads one file: {info.looks_for}")


def image_size_at(path: str | Path, lineno: int | None, img: str | Path) -> tuple[int, int]:
    """The image's (width, height); an image that will not open is the problem of this file's
    line, naming the image."""
    try:
        return image_size(img)
    except FormatError as exc:
        raise FormatError(path, f"{clip(exc.path, 120)}: {exc.reason}", lineno) from None


def checked_size(path: str | Path, lineno: int | None, img: str | Path,
                 width: int | None, height: int | None) -> tuple[int, int]:
    """The image's (width, height), after checking the sizes the file gives (None: not given)."""
    w, h = image_size_at(path, lineno, img)
    if (width is not None and width != w) or (height is not None and height != h):
        given = f"{'?' if width is None else width}x{'?' if height is None else height}"
        raise FormatError(path, f"size {given} does not match image {clip(str(img), 120)} ({w}x{h})", lineno)
    return w, h


def is_number(text: str) -> bool:
    """Whether a text field reads as a number (a header cell or an image name does not)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
