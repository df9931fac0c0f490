"""The crop policy, one for training, testing and the visual gap: a square box around the
face's bbox (else its landmark box), ``margin`` times its larger side, resized to ``size`` x
``size``. Points are 0-based pixel (x, y) in the image and in crop pixels in the crop."""

from __future__ import annotations

import cv2
import numpy as np

from gapkit.records import FaceRecord

# The policy's name, kept in model files and crop caches: a model only works on crops cut the same way.
CROP_POLICY = "gapkit.crop/square-margin-v1"


def crop_matrix(box: tuple[float, float, float, float], size: int, margin: float) -> np.ndarray:
    """2x3 affine: image pixels -> crop pixels for a square crop around ``box`` (x, y, w, h)."""
    x, y, w, h = box
    side = margin * max(w, h)
    s = size / side
    cx, cy = x + w / 2, y + h / 2
    # Pixel centres: image coordinate cx maps to the crop's centre (size - 1) / 2.
    return np.array([[s, 0, (size - 1) / 2 - s * cx], [0, s, (size - 1) / 2 - s * cy]])


def crop_face(img: np.ndarray, record: FaceRecord, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop policy: ``record``'s face (its bbox, else its landmark box) from the decoded image,
    as a (size, size, 3) crop and the 2x3 image -> crop matrix."""
    return crop_box(img, record.bbox or record.landmark_box(), size, margin)


def crop_box(img: np.ndarray, box: tuple[float, float, float, float], size: int,
             margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop policy around a face box (x, y, w, h): the crop and its image -> crop matrix."""
    m = crop_matrix(box, size, margin)
    crop = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop, m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)
