"""Safe output: never overwrite without permission, and write atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gapkit.errors import OutputExistsError


def check_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse to touch an existing output unless ``overwrite`` is set."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} exists; pass --overwrite to replace it")
    return p


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", overwrite: bool = False) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and move it into place only on success."""
    p = check_output(path, overwrite)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "") as f:
            yield f
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> None:
    with atomic_open(path, "w", overwrite=overwrite) as f:
        f.write(text)
