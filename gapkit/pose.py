"""Head pose (yaw, pitch, roll in degrees) from 2-D landmarks, by ``cv2.solvePnP`` against the
simulator's 3-D mean face.

Angles follow :func:`gapkit.face3d.rotation`: positive yaw turns the nose to the image
right, positive pitch tilts it up, positive roll turns the face clockwise. Only the rigid
points (eyes, nose, mouth corners) are used: the jaw and brows are where label semantics
differ, and a pose that depended on them would mix the pose gap with the label gap.
The camera is unknown; a long lens (focal = 3 image sides) keeps the estimate close to
weak perspective, which is what a single face crop supports.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from gapkit.errors import GapkitError
from gapkit.face3d import build_face
from gapkit.schemes import Mapper, find_mapper

# iBUG-68 indices of the points that mean the same in every labelling convention.
RIGID = np.array([27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 37, 38, 40, 41, 43, 44, 46, 47, 48, 54])
_FLIP_Z = np.diag([1.0, 1.0, -1.0])


@lru_cache(maxsize=1)
def mean_face_3d() -> np.ndarray:
    """(68, 3) iBUG points of the neutral simulated face, head frame made right-handed
    (x image right, y down, z away from the camera), in face-width units."""
    face = build_face(np.zeros(7), np.zeros(4), 0.0, 0.0, 0.0, size=100)
    return face.points3d[:68] @ _FLIP_Z


def angles_from_rotation(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from a camera rotation of the right-handed head frame."""
    m = _FLIP_Z @ r @ _FLIP_Z  # = Rz(roll) Rx(pitch) Ry(yaw) in the simulator's convention
    pitch = math.degrees(math.asin(float(np.clip(m[2, 1], -1.0, 1.0))))
    yaw = math.degrees(math.atan2(-m[2, 0], m[2, 2]))
    roll = math.degrees(math.atan2(-m[0, 1], m[1, 1]))
    return yaw, pitch, roll


def _to_ibug68(scheme: str) -> Mapper | None:
    if scheme == "ibug68":
        return None
    try:
        return find_mapper(scheme, "ibug68")
    except GapkitError:
        raise GapkitError(f"pose needs the iBUG-68 eyes, nose and mouth; scheme {scheme} has no mapping "
                          "to ibug68") from None


def estimate_pose(points: np.ndarray, scheme: str, width: int, height: int) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees for (N, K, 2) pixel shapes of ``scheme``.

    A face with fewer than 6 present rigid points, or a degenerate shape, gets NaN.
    """
    pts = np.asarray(points, float)
    pts = pts[None] if pts.ndim == 2 else pts
    mapper = _to_ibug68(scheme)
    if mapper is not None:
        pts = mapper(pts)
    obj = mean_face_3d()[RIGID]
    side = float(max(width, height))
    cam = np.array([[3 * side, 0, (width - 1) / 2], [0, 3 * side, (height - 1) / 2], [0, 0, 1]])
    out = np.full((len(pts), 3), np.nan)
    for i, shape in enumerate(pts[:, RIGID]):
        ok = ~np.isnan(shape).any(axis=1)
        if ok.sum() < 6:
            continue
        try:
            found, rvec, _ = cv2.solvePnP(obj[ok], np.ascontiguousarray(shape[ok]), cam, None,
                                          flags=cv2.SOLVEPNP_SQPNP)
        except cv2.error:  # a degenerate shape (points collapsed together) has no pose
            continue
        if found:
            out[i] = angles_from_rotation(cv2.Rodrigues(rvec)[0])
    return out


def _image_size(r) -> tuple[int, int]:
    """The record's image size; for labels read without their image, a frame centred on the
    face (the camera's principal point at the face's centre, as in a face crop)."""
    if r.width is not None and r.height is not None:
        return r.width, r.height
    centre = np.nanmean(r.points, axis=0) if not np.isnan(r.points).all() else np.zeros(2)
    return max(1, int(round(2 * abs(centre[0])))), max(1, int(round(2 * abs(centre[1]))))


def records_pose(records: list, prefer_stored: bool = False) -> np.ndarray:
    """(N, 3) pose of each record from its points; with ``prefer_stored`` a record's own
    ``attributes`` yaw/pitch/roll (the simulator writes them) are used where present."""
    out = np.full((len(records), 3), np.nan)
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, r in enumerate(records):
        a = r.attributes
        if prefer_stored and all(isinstance(a.get(k), (int, float)) for k in ("yaw", "pitch", "roll")):
            out[i] = a["yaw"], a["pitch"], a["roll"]
        else:
            groups.setdefault((r.scheme, *_image_size(r)), []).append(i)
    for (scheme, w, h), idx in groups.items():
        out[idx] = estimate_pose(np.stack([records[i].points for i in idx]), scheme, w, h)
    return out
