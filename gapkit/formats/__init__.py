"""Format name -> module. Each module declares itself in ``INFO`` (a FormatInfo: suffixes,
folder markers, what it stores, its options) and has ``read(src, **opts)`` yielding
FaceRecord | Problem and, where writing makes sense, ``write(records, out, overwrite=...)``
yielding what it wrote or the Problem that stopped a record. Only these modules know a file
format; adding one is one module in this package: it is found by its ``INFO``."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from gapkit.errors import ConfigError, InputError
from gapkit.formats.common import FormatInfo


def _discover() -> tuple[ModuleType, ...]:
    """Every module of this package that declares an ``INFO``, in detection order."""
    found = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)]
    return tuple(sorted((m for m in found if isinstance(getattr(m, "INFO", None), FormatInfo)),
                        key=lambda m: (m.INFO.detect_rank, m.INFO.name)))


_MODULES = _discover()
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
