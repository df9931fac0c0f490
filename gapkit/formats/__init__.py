"""Format name -> module. Each module declares itself in ``INFO`` (a FormatInfo: suffixes,
folder markers, what it stores, its options) and has ``read(src, **opts)`` yielding
FaceRecord | Problem and, where writing makes sense, ``write(records, out, overwrite=...)``
yielding what it wrote or the Problem that stopped a record. Only these modules know a file
format; adding one is one module and one line here."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from gapkit.errors import ConfigError, InputError
from gapkit.formats import coco, csv_table, datagen, dlib_xml, facesynthetics, ibug300w, manifest, menpo, wflw
from gapkit.formats.common import FormatInfo

# Folder detection tries these in order: the more specific layouts first.
_MODULES = (manifest, facesynthetics, datagen, menpo, ibug300w, wflw, coco, dlib_xml, csv_table)
FORMATS: dict[str, ModuleType] = {m.INFO.name: m for m in _MODULES}


def get_format(name: str, write: bool = False) -> ModuleType:
    if name not in FORMATS:
        raise ConfigError(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
    mod = FORMATS[name]
    if write and not hasattr(mod, "write"):
        writable = ", ".join(n for n, m in FORMATS.items() if hasattr(m, "write"))
        raise ConfigError(f"format {name!r} is read-only; write one of {writable}")
    return mod


def info(name: str) -> FormatInfo:
    return get_format(name).INFO


def guess_format(path: str | Path) -> str:
    """A best guess for --from when it is left out, from the formats' declarations."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file():
        for m in _MODULES:
            if any(p.name.endswith(sfx) for sfx in m.INFO.files):
                return m.INFO.name
    else:
        for m in _MODULES:
            if any(next(p.rglob(pat), None) is not None for pat in m.INFO.folder):
                return m.INFO.name
    known = sorted({s for m in _MODULES for s in m.INFO.files})
    marks = [pat for m in _MODULES for pat in m.INFO.folder]
    raise InputError(f"cannot guess the format of {p}: looked for a file ending in {', '.join(known)} "
                     f"or a folder holding {', '.join(marks)}; pass --from")


def check_options(name: str, options: dict, write: bool = False) -> dict:
    """Refuse option keys the format does not declare, naming the ones it has."""
    fi = info(name)
    declared = fi.write_options if write else fi.read_options
    unknown = sorted(set(options) - set(declared))
    if unknown:
        side = "writer" if write else "reader"
        valid = "; ".join(f"{k}: {v}" for k, v in declared.items()) or "none"
        raise ConfigError(f"unknown {name} {side} option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; valid: {valid}")
    return options


__all__ = ["FORMATS", "FormatInfo", "check_options", "get_format", "guess_format", "info"]
