"""The 300-W directory layout: ``<subset>/<split>/<name>.pts`` beside ``<name>.<png|jpg>``.

``.pts`` values are 1-based (the centre of the top-left pixel is (1, 1)); records are
0-based. The benchmark split comes from the folder names:
train = afw + helen/trainset + lfpw/trainset; common = helen/testset + lfpw/testset;
challenging = ibug; full = common + challenging; test = the private 300W indoor/outdoor set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from gapkit.errors import ConfigError, FormatError, Problem
from gapkit.files import atomic_write_text
from gapkit.formats.common import FormatInfo, absolute, place_image, scheme_for, write_each
from gapkit.formats.pts import dumps_pts, read_pts_many
from gapkit.images import find_image, image_size
from gapkit.records import FaceRecord, make_record

SUBSETS = {"train": {"train"}, "common": {"common"}, "challenging": {"challenging"},
           "full": {"common", "challenging"}, "test": {"test"},
           "all": {"train", "common", "challenging", "test", "other"}}


INFO = FormatInfo(
    name="300w", about="300-W folders: <subset>/<split>/NAME.pts (1-based) beside NAME.png|jpg",
    looks_for="*.pts files beside their images", files=(".pts",), folder=("*.pts",),
    stores=frozenset({"split", "any_scheme"}),
    read_options={"subset": f"only these splits: {' | '.join(SUBSETS)} (default all)",
                  "scheme": "scheme name when the point count is ambiguous"},
    write_options={"images": "link | copy | none: how images are placed beside the .pts (default link)"},
    splits=("train", "common", "challenging", "test", "other"), detect_rank=50)


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


def read(src: str | Path, subset: str = "all", scheme: str | None = None,
         chunk: int = 256) -> Iterator[FaceRecord | Problem]:
    """Stream records from a 300-W style folder (or a single .pts file)."""
    root = Path(src)
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; one of {', '.join(SUBSETS)}")
    files = [root] if root.is_file() else sorted(root.rglob("*.pts"))
    base = root.parent if root.is_file() else root
    wanted = SUBSETS[subset]
    for i in range(0, len(files), chunk):
        tagged = [(f, split_of(Path(absolute(f)))) for f in files[i:i + chunk]]
        batch = [(f, where) for f, where in tagged if where[0] in wanted]
        for (f, where), pts in zip(batch, read_pts_many([f for f, _ in batch]), strict=True):
            if isinstance(pts, FormatError):
                yield pts.problem()
                continue
            try:
                yield _record(f, base, pts, scheme, where)
            except FormatError as exc:
                yield exc.problem()


def _record(f: Path, base: Path, pts, scheme: str | None, where: tuple[str, str]) -> FaceRecord:
    img = find_image(f.with_suffix(""))
    if img is None:
        raise FormatError(f, "no image beside this .pts (looked for the same name with .png/.jpg/...)")
    w, h = image_size(img)
    rel = f.relative_to(base).with_suffix("")
    split, sub = where
    return make_record(f, None, id=rel.as_posix(), image=absolute(img), width=w, height=h,
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
