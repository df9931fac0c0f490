"""Augmentation of face crops, shared by the detector's trainer and the image refiner.

A crop is (S, S, 3) uint8 BGR; its points (K, 2) are 0-based crop pixels (x, y). Geometry
moves the points with the pixels; a mirror relabels them left <-> right by the scheme's flip
permutation. Points that leave the crop are kept, never dropped.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from gapkit.crop import apply_affine
from gapkit.settings import Settings


class Augment(Settings):
    """Geometric and photometric augmentation; ``none()`` for evaluation."""

    scale: float = 0.12       # +- relative zoom
    rotate: float = 18.0      # +- degrees
    shift: float = 0.06       # +- fraction of the crop
    flip: float = 0.5         # probability
    blur: float = 0.3         # probability of a Gaussian blur
    noise: float = 0.3        # probability of sensor noise
    jpeg: float = 0.3         # probability of JPEG re-encoding
    colour: float = 0.2       # +- brightness / contrast / per-channel gain
    grey: float = 0.1         # probability of grayscale
    gamma: float = 0.25       # +- log-gamma

    @classmethod
    def none(cls) -> Augment:
        return cls(**dict.fromkeys(cls.model_fields, 0.0))


@lru_cache(maxsize=4)
def _noise_bank(side: int) -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((side, side, 3)).astype(np.float32)


def augment(img: np.ndarray, pts: np.ndarray, aug: Augment, flip_perm: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a crop and its points (K, 2). Points that leave the crop stay,
    with coordinates outside [0, size); they are never dropped."""
    size = img.shape[0]
    c = (size - 1) / 2
    s = 1 + rng.uniform(-aug.scale, aug.scale)
    a = math.radians(rng.uniform(-aug.rotate, aug.rotate))
    t = rng.uniform(-aug.shift, aug.shift, 2) * size
    m = cv2.getRotationMatrix2D((c, c), math.degrees(a), s)
    m[:, 2] += t
    flip = rng.random() < aug.flip
    if flip:  # mirror about the crop centre, then relabel left <-> right
        m = np.array([[-1, 0, 2 * c], [0, 1, 0]]) @ np.vstack([m, [0, 0, 1]])
    if np.any(m != np.array([[1, 0, 0], [0, 1, 0]])):
        img = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        pts = apply_affine(m, pts)
    if flip:
        pts = pts[flip_perm]
    if aug.grey and rng.random() < aug.grey:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if aug.colour or aug.gamma:
        # Gain, bias, contrast and gamma folded into one lookup table per channel.
        v = np.arange(256, dtype=np.float32)
        gain = rng.uniform(1 - aug.colour, 1 + aug.colour, 3) if aug.colour else np.ones(3)
        bias = rng.uniform(-aug.colour, aug.colour) * 60 if aug.colour else 0.0
        contrast = rng.uniform(1 - aug.colour, 1 + aug.colour) if aug.colour else 1.0
        gamma = math.exp(rng.uniform(-aug.gamma, aug.gamma)) if aug.gamma else 1.0
        lin = np.clip((v[:, None] * gain.astype(np.float32) + np.float32(bias - 128)) * np.float32(contrast) + 128,
                      0, 255)
        lut = (255 * (lin / 255) ** np.float32(gamma)).astype(np.uint8)
        img = cv2.LUT(img, lut[None])
    if aug.blur and rng.random() < aug.blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.5))
    if aug.noise and rng.random() < aug.noise:
        # A random crop of a fixed bank of unit noise, scaled: as good as fresh noise, far cheaper.
        bank = _noise_bank(2 * img.shape[0])
        y0, x0 = rng.integers(0, img.shape[0], 2)
        noise = bank[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] * np.float32(rng.uniform(2, 10))
        img = cv2.add(img, noise.astype(np.int16), dtype=cv2.CV_8U)
    if aug.jpeg and rng.random() < aug.jpeg:
        img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 80))])[1],
                           cv2.IMREAD_COLOR)
    return img, pts


def to_tensor_batch(images: np.ndarray):
    """(B, S, S, 3) uint8 BGR -> (B, 3, S, S) float32 in [-1, 1]."""
    import torch  # deferred: `import gapkit` stays torch-free

    t = torch.from_numpy(np.ascontiguousarray(images[..., ::-1])).permute(0, 3, 1, 2).float()
    return t.div_(127.5).sub_(1.0)
