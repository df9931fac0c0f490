"""MATLAB ``.mat`` files through scipy, for the readers of datasets shipped that way (not a format).

scipy reads the v4 to v7 layouts. v7.3 files are HDF5 inside, which needs h5py (not a
gapkit dependency), so they get a FormatError that says so and how to re-save them.
Matlab arrays are 1-based: a pixel coordinate ``c`` in a .mat is ``c - 1`` in gapkit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import matfile_version

from gapkit.errors import FormatError

V73 = ("a MATLAB v7.3 (HDF5) .mat file, which needs h5py (not a gapkit dependency); re-save it "
       "as v7 (MATLAB or Octave: load it, then save(NAME, '-v7')) or read it with h5py yourself")


def _version(path: Path) -> tuple[int, int]:
    try:
        with open(path, "rb") as f:
            return matfile_version(f)
    except FileNotFoundError:
        raise FormatError(path, "file is missing") from None
    except OSError as exc:
        raise FormatError(path, f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - scipy's header check: any failure means "not a .mat"
        raise FormatError(path, f"not a MATLAB .mat file ({type(exc).__name__}: {exc})") from None


def mat_names(path: str | Path) -> list[str]:
    """The variable names in a .mat file, read from its headers (the data stays on disk)."""
    p = Path(path)
    if _version(p)[0] == 2:
        raise FormatError(p, V73)
    try:
        return [name for name, _shape, _cls in scipy.io.whosmat(p)]
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail in scipy in many ways; each is this file's problem
        raise FormatError(p, f"damaged .mat file ({type(exc).__name__}: {exc})") from None


def load_mat(path: str | Path, names: list[str] | None = None) -> dict:
    """The variables of a v4-v7 .mat file (only ``names`` when given), as scipy gives them."""
    p = Path(path)
    if _version(p)[0] == 2:
        raise FormatError(p, V73)
    try:
        return scipy.io.loadmat(p, variable_names=names)
    except NotImplementedError:  # scipy's word for v7.3, should the version probe miss it
        raise FormatError(p, V73) from None
    except Exception as exc:  # noqa: BLE001 - damaged bytes fail in scipy in many ways; each is this file's problem
        raise FormatError(p, f"damaged .mat file ({type(exc).__name__}: {exc})") from None


def numeric(value, path: str | Path, what: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as a float array of ``shape`` (None: any length), or a FormatError naming ``what``."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        got = {"U": "text", "S": "text", "O": "a cell array", "V": "a struct", "c": "complex numbers"}
        raise FormatError(path, f"{what} must be numbers, got {got.get(arr.dtype.kind, str(arr.dtype))}")
    if arr.ndim != len(shape) or any(want is not None and got != want for got, want in zip(arr.shape, shape,
                                                                                              strict=True)):
        want_s = " x ".join("N" if n is None else str(n) for n in shape)
        raise FormatError(path, f"{what} must be {want_s}, got {' x '.join(map(str, arr.shape))}")
    return arr.astype(float)
