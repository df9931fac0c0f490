"""AFLW2000-3D (Zhu et al., 3DDFA, CVPR 2016): ``imageNNNNN.mat`` beside ``imageNNNNN.jpg``.

Each MATLAB v5 file holds ``pt3d_68`` (3 x 68: x, y and depth of the 68 iBUG-order points
of a fitted 3-D face model) and ``pt2d`` (2 x 21: AFLW's 21 hand-labelled points), both in
pixels of the 450 x 450 image, plus ``Pose_Para`` (pitch, yaw, roll in radians, tx, ty,
tz, scale) and 3DMM coefficients.

Coordinates are **1-based** (Matlab: the centre of the top-left pixel is (1, 1)); records
are 0-based, so 1 is subtracted from x and y. The files show it: 3DDFA turns its y-up
model frame into image rows with ``h + 1 - y`` (Matlab's flip; 3DDFA's code does the same,
``std_size + 1 - y``), and AFLW's "not labelled" marker -1 went through it, so every
unlabelled ``pt2d`` point reads (-1, 452) = (-1, h + 2) in a 450-row image. A 0-based flip
would have left 450 or 451. ``pt2d`` points with x or y equal to -1 are missing (NaN).

The 68 points are read as ``ibug68`` (the 300-W order); they are projections of a 3-D
model, so on turned faces the far jaw follows the hidden outline, not the visible one.
Their depth goes to ``attributes["z"]`` in the same pixel scale as x and y, as in the
file: larger is nearer the camera (the nose tip has the largest z; MediaPipe's z has the
opposite sign). ``Pose_Para`` goes to ``attributes["pose_para"]``. With ``-O points=pt2d``
the 21 AFLW points are read instead, as ``aflw21`` (``aflw19`` is a mapping away).

AFLW2000-3D is a test set: every record's split is ``test``. Label-only reading opens no
image (``image`` names ``NAME.jpg`` beside the .mat; width and height are unknown).
Only a folder holding ``imageNNNNN.mat`` files is guessed to be AFLW2000-3D.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import ConfigError, FormatError, Problem
from gapkit.formats.common import FormatInfo, guarded
from gapkit.formats.matfile import load_mat, mat_names, numeric
from gapkit.formats.pts import image_for, utf8_name
from gapkit.records import FaceRecord, make_record

# -O points: the .mat key, its rows, its point count and the scheme of the points.
POINTS = {"pt3d_68": (3, 68, "ibug68"), "pt2d": (2, 21, "aflw21")}
POSE_NAMES = ("pitch", "yaw", "roll", "tx", "ty", "tz", "scale")

INFO = FormatInfo(
    name="aflw2000", about="AFLW2000-3D: NAME.mat (pt3d_68 and pt2d, 1-based, MATLAB v5) beside NAME.jpg",
    looks_for="AFLW2000-3D imageNNNNN.mat files (pt3d_68, pt2d) beside their images",
    files=(".mat",), folder=("image[0-9][0-9][0-9][0-9][0-9].mat",),
    stores=frozenset({"missing", "split", "attributes"}), splits=("test",),
    read_options={"points": "pt3d_68 (68 iBUG-order points, depth in attributes z; default) | "
                            "pt2d (AFLW's 21 hand-labelled points, scheme aflw21; -1 = missing)"},
    # after the 300-W and menpo layouts: a folder they claim stays theirs
    detect_rank=55, labels_only=True)


def read(src: str | Path, points: str = "pt3d_68", labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """One record per .mat file of a folder (searched recursively), or of one .mat file."""
    if points not in POINTS:
        raise ConfigError(f"-O points must be one of {', '.join(POINTS)}, got {points!r}")
    root = Path(src)
    files = [root] if root.is_file() else sorted(root.rglob("*.mat"))
    base = root.parent if root.is_file() else root
    for f in files:
        yield guarded(f, None, _record, f, base, points, labels_only)


def _record(f: Path, base: Path, key: str, labels_only: bool) -> FaceRecord:
    utf8_name(f)  # the id is made from it
    names = mat_names(f)
    if key not in names:
        hint = "a COFW file: read it --from cofw" if {"phisT", "phisTr", "Points"} & set(names) else \
            "not an AFLW2000-3D file?"
        raise FormatError(f, f"no {key} in this .mat (it holds {', '.join(names) or 'nothing'}); {hint}")
    rows, k, scheme = POINTS[key]
    mat = load_mat(f, [key, "Pose_Para"])
    arr = _points(numeric(mat[key], f, key, (rows, k)), f, key)
    attrs = {"pose_para": _pose(mat, f)} if "Pose_Para" in mat else {}
    if key == "pt3d_68":
        attrs["z"] = arr[2].tolist()
    img, w, h = image_for(f, f.stem, None, labels_only, default_ext=".jpg")  # AFLW2000-3D's are .jpg
    return make_record(f, None, id=f.relative_to(base).with_suffix("").as_posix(), image=img,
                       width=w, height=h, scheme=scheme, points=arr[:2].T - 1.0,
                       source="aflw2000_3d", split="test", attributes=attrs)


def _points(arr: np.ndarray, f: Path, key: str) -> np.ndarray:
    """The file's columns, refusing a non-finite number; pt2d's "not labelled" (-1) becomes NaN."""
    bad = ~np.isfinite(arr).all(axis=0)
    if bad.any():
        k = int(np.argmax(bad))
        marker = " (AFLW marks a point it did not label with -1)" if key == "pt2d" else ""
        raise FormatError(f, f"{key}: point {k + 1} is not finite ({', '.join(map(str, arr[:, k]))}){marker}")
    if key == "pt2d":
        arr[:, (arr[0] == -1) | (arr[1] == -1)] = np.nan
    return arr


def _pose(mat: dict, f: Path) -> dict[str, float]:
    """Pose_Para (1 x 7) by name; angles in radians, as the file has them."""
    pose = numeric(mat["Pose_Para"], f, "Pose_Para", (1, 7))[0]
    if not np.isfinite(pose).all():
        raise FormatError(f, "Pose_Para has a non-finite value")
    return dict(zip(POSE_NAMES, pose.tolist(), strict=True))
