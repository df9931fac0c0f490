"""The 300-W directory layout: ``<subset>/<split>/<name>.pts`` beside ``<name>.<png|jpg>``.

``.pts`` values are 1-based (the centre of the top-left pixel is (1, 1)); records are
0-based. Headerless ``.pts`` (bare ``x y`` lines) read the same way. The benchmark split
comes from the folder names:
train = afw + helen/trainset + lfpw/trainset; common = helen/testset + lfpw/testset;
challenging = ibug; full = common + challenging; test = the private 300W indoor/outdoor set.
The images may live elsewhere (``images``: 300-VW keeps ``NNN/annot/*.pts`` beside
``NNN/imgs/*.jpg``, read with ``images=../imgs``), or be absent (``labels_only``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from gapkit.errors import ConfigError, Problem
from gapkit.files import atomic_write_text
from gapkit.formats.common import FormatInfo, absolute, guarded, place_image, scheme_for, write_each
from gapkit.formats.pts import IMAGES_OPTION, dumps_pts, image_for, read_pts, utf8_name
from gapkit.records import FaceRecord, make_record
from gapkit.schemes import get_scheme

SUBSETS = {"train": {"train"}, "common": {"common"}, "challenging": {"challenging"},
           "full": {"common", "challenging"}, "test": {"test"},
           "all": {"train", "common", "challenging", "test", "other"}}


INFO = FormatInfo(
    name="300w", about="300-W folders: <subset>/<split>/NAME.pts (1-based) beside NAME.png|jpg",
    looks_for="*.pts files beside their images", files=(".pts",), folder=("*.pts",),
    stores=frozenset({"split", "any_scheme"}),
    read_options={"subset": f"only these splits: {' | '.join(SUBSETS)} (default all)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "images": IMAGES_OPTION},
    write_options={"images": "link | copy | none: how images are placed beside the .pts (default link)"},
    splits=("train", "common", "challenging", "test", "other"), detect_rank=50, labels_only=True)


def split_of(rel: Path) -> tuple[str, str]:
    """(split, subset name) from the folder names in a .pts path."""
    parts = [p.lower() for p in rel.parts[:-1]]
    joined = "/".join(parts)
    if "ibug" in parts:
        return "challenging", "ibug"
    if "afw" in parts:
        return "train", "afw"
    for ds in ("helen", "lfpw"):
        if ds in parts:
            if "trainset" in parts:
                return "train", f"{ds}_trainset"
            if "testset" in parts:
                return "common", f"{ds}_testset"
    if "01_indoor" in joined or "02_outdoor" in joined:
        return "test", "300w_private"
    return "other", parts[0] if parts else ""


def read(src: str | Path, subset: str = "all", scheme: str | None = None, images: str | Path | None = None,
         labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """Stream records from a 300-W style folder (or a single .pts file)."""
    root = Path(src)
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; one of {', '.join(SUBSETS)}")
    files = [root] if root.is_file() else sorted(root.rglob("*.pts"))
    base = root.parent if root.is_file() else root
    if scheme:
        get_scheme(scheme)  # an unknown name stops the job once, not once per file
    for f in files:
        got = guarded(f, None, _record, f, base, scheme, SUBSETS[subset], images, labels_only)
        if got is not None:
            yield got


def _record(f: Path, base: Path, scheme: str | None, wanted: set[str], images: str | Path | None,
            labels_only: bool) -> FaceRecord | None:
    """One .pts file's record; None when its split is not wanted."""
    split, sub = split_of(Path(absolute(f)))
    if split not in wanted:
        return None
    utf8_name(f)
    pts = read_pts(f)
    img, w, h = image_for(f, f.stem, images, labels_only)
    return make_record(f, None, id=f.relative_to(base).with_suffix("").as_posix(), image=img, width=w, height=h,
                       scheme=scheme_for(len(pts), f, explicit=scheme), points=pts,
                       source=f"300w/{sub}" if sub else "300w", split=split)


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False,
          images: str = "link") -> Iterator[FaceRecord | Problem]:
    """Write ``<id>.pts`` (1-based) and the image beside it; yields what was written or why not."""
    def one(rec: FaceRecord, stem: Path) -> None:
        text = dumps_pts(rec.points, origin=1.0, path=rec.id)
        place_image(rec, stem.with_name(stem.name + (Path(rec.image).suffix.lower() or ".png")), images)
        atomic_write_text(stem.with_name(stem.name + ".pts"), text, overwrite=True)

    yield from write_each(records, Path(out), overwrite, one)
