"""The refiner's frame: each face warped so that its shape sits on the target mean shape.

A frame is an S x S crop; points in it are 0-based crop pixels (x, y), pixel centres on
integers. These helpers serve every refiner kind: place the reference shape, compute the
image -> crop matrices, move points in and out, cut the crops (each image read once), and
mirror crops and points left-right.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from gapkit.align import procrustes
from gapkit.errors import Problem

FACE_FILL = 0.62  # share of the crop side the reference shape's larger extent fills


def reference_frame(mean_target: np.ndarray, size: int) -> np.ndarray:
    """(K, 2) crop positions of the target mean shape: centred, larger extent FACE_FILL * size."""
    ref = np.asarray(mean_target, float)
    lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
    s = FACE_FILL * size / float(np.max(hi - lo))
    return (ref - (lo + hi) / 2) * s + (size - 1) / 2


def frame_matrices(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(N, 2, 3) image -> crop affine matrices that put each (K, 2) shape on ``ref``."""
    return procrustes(np.asarray(points, float), ref).matrix[:, :2, :]


def to_frame(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(N, 2, 3) matrices applied to (N, K, 2) points."""
    return np.einsum("nij,nkj->nki", m[:, :, :2], pts) + m[:, None, :, 2]


def from_frame(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Crop points (N, K, 2) back to image points: the inverse of :func:`to_frame`."""
    inv = np.stack([cv2.invertAffineTransform(x) for x in m])
    return to_frame(inv, pts)


def read_crops(images: list[str], frames: list[tuple[np.ndarray, int]], ids: list[str] | None = None,
               progress: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], dict[int, Problem]]:
    """For each frame (matrices (N, 2, 3), side S), (N, S, S, 3) uint8 BGR crops, each image read
    once for all frames; and {face index: problem} for faces whose image is missing or
    unreadable (their crops stay black)."""
    out = [np.zeros((len(images), size, size, 3), np.uint8) for _, size in frames]
    problems: dict[int, Problem] = {}
    last, img = None, None
    for i, path in enumerate(images):
        if path != last:
            img = cv2.imread(path, cv2.IMREAD_COLOR) if path else None
            last = path
        if img is None:
            why = "missing image" if not path or not _exists(path) else "unreadable image"
            problems[i] = Problem(path=path, line=None, reason=f"{why} (face {ids[i] if ids else i})")
        else:
            for crops, (matrices, size) in zip(out, frames, strict=True):
                crops[i] = warp(img, matrices[i], size)
        if progress:
            progress(1)
    return out, problems


def warp(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """The S x S crop of a decoded image under the image -> crop matrix ``m`` (2, 3); area
    sampling when it shrinks, edges replicated."""
    flags = cv2.INTER_AREA if abs(np.linalg.det(m[:, :2])) < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(img, m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def _exists(path: str) -> bool:
    return Path(path).is_file()


def grey(crops: np.ndarray) -> np.ndarray:
    """(N, S, S) grey crops of (N, S, S, 3) BGR ones."""
    return np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in crops])


def mirror(images: np.ndarray, pts: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crops (N, S, S[, 3]) mirrored left-right and their points (N, K, 2) relabelled."""
    return np.ascontiguousarray(images[:, :, ::-1]), mirror_points(pts, flip, images.shape[2])


def mirror_points(pts: np.ndarray, flip: np.ndarray, size: int) -> np.ndarray:
    """Crop points (N, K, 2) mirrored in an S-wide crop (x -> S - 1 - x: pixel centres on
    integers) and relabelled by the scheme's flip permutation."""
    q = pts[:, flip].copy()
    q[..., 0] = size - 1 - q[..., 0]
    return q
