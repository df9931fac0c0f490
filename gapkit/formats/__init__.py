"""Format name -> module. Each module has ``read(src, **opts)`` yielding FaceRecord | Problem,
and, where writing makes sense, ``write(records, out, overwrite=...)`` yielding what it wrote
or the Problem that stopped a record. Only these modules know a file format."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from gapkit.errors import GapkitError
from gapkit.formats import coco, csv_table, datagen, dlib_xml, facesynthetics, ibug300w, manifest, menpo, wflw

FORMATS: dict[str, ModuleType] = {
    "manifest": manifest,
    "300w": ibug300w,
    "facesynthetics": facesynthetics,
    "datagen": datagen,
    "wflw": wflw,
    "coco": coco,
    "menpo": menpo,
    "dlib": dlib_xml,
    "csv": csv_table,
}


def get_format(name: str, write: bool = False) -> ModuleType:
    if name not in FORMATS:
        raise GapkitError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    mod = FORMATS[name]
    if write and not hasattr(mod, "write"):
        writable = ", ".join(n for n, m in FORMATS.items() if hasattr(m, "write"))
        raise GapkitError(f"format {name!r} is read-only; write one of {writable}")
    return mod


def guess_format(path: str) -> str:
    """A best guess for --from when it is left out."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return "manifest"
    if p.suffix == ".csv":
        return "csv"
    if p.suffix == ".xml":
        return "dlib"
    if p.suffix == ".json":
        return "coco"
    if p.suffix == ".txt":
        return "wflw"
    if p.is_dir():
        if next(p.rglob("*_ldmks.txt"), None):
            return "facesynthetics"
        if next(p.rglob("key_points"), None):
            return "datagen"
        if next(p.rglob("*.ljson"), None):
            return "menpo"
        if next(p.rglob("*.pts"), None):
            return "300w"
    raise GapkitError(f"cannot guess the format of {path}; pass --from")
