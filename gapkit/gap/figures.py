"""Shared plumbing of the gap figures: a headless pyplot, PNG files written atomically, faces drawn
as the scheme's edges."""

from __future__ import annotations

import io
from pathlib import Path
from types import ModuleType

import matplotlib
import numpy as np

from gapkit.files import atomic_open
from gapkit.schemes import LandmarkScheme


def plt() -> ModuleType:
    """matplotlib.pyplot on the headless Agg backend."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot  # deferred: slow to import, and only once Agg is chosen (no display)

    return pyplot


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt().close(fig)
    return buf.getvalue()


def write_png(path: Path, fig) -> Path:
    """Save ``fig`` to ``path`` (replacing it) and close it."""
    data = _fig_bytes(fig)
    with atomic_open(path, "wb", overwrite=True) as f:
        f.write(data)
    return path


def draw_face(ax, shape: np.ndarray, scheme: LandmarkScheme, **kw) -> None:
    """The scheme's edges between the (K, 2) points of ``shape`` on ``ax``."""
    for i, j in scheme.edges():
        ax.plot(shape[[i, j], 0], shape[[i, j], 1], **kw)
