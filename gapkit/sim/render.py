"""Draw a posed procedural face with OpenCV, then make it look synthetic or photographic.

``realism`` in [0, 1] sets the look: 0 is a clean render (flat background, smooth shading,
sharp, noiseless), 1 is photo-like (busy background, skin texture, uneven light, occluders,
colour cast, blur, sensor noise, JPEG). Images are BGR uint8, (size, size, 3).
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from gapkit.face3d import SKULL, Face, project

SKIN = np.array([[200, 215, 240], [150, 180, 225], [110, 145, 200], [70, 100, 150], [45, 65, 105]], float)
HAIR = np.array([[20, 20, 25], [30, 45, 80], [60, 90, 140], [150, 180, 210], [110, 110, 115]], float)
IRIS = np.array([[90, 60, 30], [40, 80, 50], [30, 50, 90], [120, 110, 60]], float)


def _colour(table: np.ndarray, rng: np.random.Generator, jitter: float = 12) -> tuple[float, float, float]:
    i = rng.integers(len(table))
    j = rng.uniform(0, 1)
    c = table[i] * (1 - j) + table[min(i + 1, len(table) - 1)] * j + rng.normal(0, jitter, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))


def _pts(a: np.ndarray) -> np.ndarray:
    """Pixel points for OpenCV's fixed-point drawing (4 fractional bits)."""
    return np.round(a * 16).astype(np.int32)


SHIFT = 4


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def background(size: int, rng: np.random.Generator, busy: bool) -> np.ndarray:
    if not busy:
        top, bottom = np.array(_colour(HAIR[3:], rng, 40)), np.array(_colour(SKIN[:2], rng, 50))
        ramp = np.linspace(0, 1, size)[:, None, None]
        return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (size, size, 3)).astype(np.uint8).copy()
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(40, 220, 3).astype(np.uint8)
    for _ in range(rng.integers(8, 20)):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = rng.integers(-size // 4, size + size // 4, 2)
        kind = rng.integers(3)
        if kind == 0:
            w, h = rng.integers(size // 10, size // 2, 2)
            cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), c, -1)
        elif kind == 1:
            cv2.circle(img, (int(x), int(y)), int(rng.integers(size // 16, size // 4)), c, -1)
        else:
            x2, y2 = rng.integers(0, size, 2)
            cv2.line(img, (int(x), int(y)), (int(x2), int(y2)), c, int(rng.integers(1, 4)))
    low = cv2.resize(rng.normal(0, 25, (6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 0.8).astype(np.float32) + low, 0, 255).astype(np.uint8)


def draw_face(img: np.ndarray, face: Face, outline: np.ndarray, p: np.ndarray, seen: np.ndarray,
              rng: np.random.Generator, realism: float) -> np.ndarray:
    """Draw head, hair and features of ``face`` (projected 70 points ``p``, ``seen`` their
    self-occlusion); returns the face mask. The parts draw from ``rng`` in a fixed order, so a
    seed renders the same face."""
    unit = float(np.linalg.norm(p[45] - p[36])) / 0.67  # pixels per head unit
    skin = np.array(_colour(SKIN, rng))
    hair = _colour(HAIR, rng)
    mask, light = _head(img, outline, p, skin, unit, rng, realism)
    if rng.random() < 0.85:
        _hair(img, face, hair, rng)
    _brows(img, p, seen, hair, skin, unit)
    _eyes(img, p, seen, _colour(IRIS, rng, 15), tuple(skin * 0.45), unit)
    _nose(img, p, skin, unit, light)
    # Mouth: lips, and the inside when open.
    lips = tuple(skin * np.array([0.55, 0.55, 0.95]) * rng.uniform(0.85, 1.05))
    cv2.fillPoly(img, [_pts(p[48:60])], lips, cv2.LINE_AA, SHIFT)
    cv2.fillPoly(img, [_pts(p[60:68])], (40, 30, 60), cv2.LINE_AA, SHIFT)
    return mask


def _head(img: np.ndarray, outline: np.ndarray, p: np.ndarray, skin: np.ndarray, unit: float,
          rng: np.random.Generator, realism: float) -> tuple[np.ndarray, float]:
    """Neck, then the head's silhouette with rounded shading; returns its mask and the light's angle."""
    size = img.shape[0]
    neck = np.array([p[4] + (0, 0.02 * unit), p[12] + (0, 0.02 * unit), p[12] + (0.05 * unit, 0.9 * unit),
                     p[4] + (-0.05 * unit, 0.9 * unit)])
    cv2.fillConvexPoly(img, _pts(neck), tuple(skin * 0.75), cv2.LINE_AA, SHIFT)
    hull = cv2.convexHull(outline.astype(np.float32))[:, 0]
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, _pts(hull), 255, cv2.LINE_AA, SHIFT)
    # Rounded shading: darker towards the silhouette, lit from one side; in the face's box only.
    x0, y0 = np.clip(np.floor(hull.min(0)).astype(int) - 1, 0, size)
    x1, y1 = np.clip(np.ceil(hull.max(0)).astype(int) + 2, 0, size)
    ang = rng.uniform(0, 2 * math.pi)
    tex = rng.normal(0, 1, (12, 12)).astype(np.float32) if realism > 0 else None
    if x1 - x0 > 1 and y1 - y0 > 1:
        m = mask[y0:y1, x0:x1]
        dist = cv2.distanceTransform((m > 127).astype(np.uint8), cv2.DIST_L2, 3)
        rim = np.sqrt(np.clip(dist * np.float32(1 / (0.18 * unit + 1e-6)), 0, 1))
        xx, yy = _grid(size)
        c0 = p[:68].mean(0)
        side = ((xx[y0:y1, x0:x1] - np.float32(c0[0])) * np.float32(math.cos(ang))
                + (yy[y0:y1, x0:x1] - np.float32(c0[1])) * np.float32(math.sin(ang))) * np.float32(1 / (0.6 * unit))
        shade = (0.55 + 0.45 * rim) * (1 + 0.18 * np.clip(side, -1, 1))
        if tex is not None:  # skin texture
            shade += np.float32(realism * 9 / max(skin.mean(), 1.0)) * cv2.resize(tex, (x1 - x0, y1 - y0),
                                                                                  interpolation=cv2.INTER_CUBIC)
        alpha = (m.astype(np.float32) * np.float32(1 / 255))[..., None]
        roi = img[y0:y1, x0:x1]
        face_rgb = cv2.merge([shade * np.float32(c) for c in skin])
        roi[:] = np.clip(roi + (face_rgb - roi) * alpha, 0, 255).astype(np.uint8)
    return mask, ang


def _hair(img: np.ndarray, face: Face, hair: tuple, rng: np.random.Generator) -> None:
    """The skull's cap above a hairline, projected."""
    (cx, cy, cz), (a, b, c) = SKULL["centre"], SKULL["radii"]
    line = rng.uniform(0.30, 0.48) * math.pi
    u, v = np.meshgrid(np.linspace(0, 2 * math.pi, 32, endpoint=False), np.linspace(0, line, 6))
    cap = np.stack([cx + a * 1.04 * np.sin(v) * np.cos(u), cy - b * 1.04 * np.cos(v),
                    cz + c * 1.04 * np.sin(v) * np.sin(u)], -1).reshape(-1, 3)
    cv2.fillConvexPoly(img, _pts(cv2.convexHull(project(face, cap).astype(np.float32))[:, 0]), hair,
                       cv2.LINE_AA, SHIFT)


def _brows(img: np.ndarray, p: np.ndarray, seen: np.ndarray, hair: tuple, skin: np.ndarray, unit: float) -> None:
    """A band whose mid-line is the projected brow points."""
    brow_w = max(1, int(round(0.056 * unit)))
    for idx in (range(17, 22), range(22, 27)):
        idx = [i for i in idx if seen[i]]
        if len(idx) < 2:
            continue
        cv2.polylines(img, [_pts(p[list(idx)])], False, tuple(np.array(hair) * 0.8 + skin * 0.2 * 0.5), brow_w,
                      cv2.LINE_AA, SHIFT)


def _eyes(img: np.ndarray, p: np.ndarray, seen: np.ndarray, iris: tuple, dark: tuple, unit: float) -> None:
    """Sclera, iris clipped to the lids, lid line; an eye round the far side of the head is not drawn."""
    size = img.shape[0]
    for idx, pupil in ((range(36, 42), 68), (range(42, 48), 69)):
        if not seen[pupil]:
            continue
        # Work in the eye's box only: the iris is clipped to the lids through a mask.
        x0, y0 = np.floor(p[list(idx)].min(0)).astype(int) - 2
        x1, y1 = np.ceil(p[list(idx)].max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        roi = img[y0:y1, x0:x1]
        eye = _pts(p[list(idx)] - (x0, y0))
        em = np.zeros(roi.shape[:2], np.uint8)
        cv2.fillPoly(em, [eye], 255, cv2.LINE_AA, SHIFT)
        layer = roi.copy()
        cv2.fillPoly(layer, [eye], (225, 230, 235), cv2.LINE_AA, SHIFT)
        r, c = 0.042 * unit, tuple(_pts(p[pupil] - (x0, y0)))
        cv2.circle(layer, c, int(r * 16), iris, -1, cv2.LINE_AA, SHIFT)
        cv2.circle(layer, c, int(r * 0.45 * 16), (15, 15, 15), -1, cv2.LINE_AA, SHIFT)
        m = (em.astype(np.float32) / 255)[..., None]
        roi[:] = (roi * (1 - m) + layer * m).astype(np.uint8)
        cv2.polylines(roi, [eye], True, dark, 1, cv2.LINE_AA, SHIFT)


def _nose(img: np.ndarray, p: np.ndarray, skin: np.ndarray, unit: float, light: float) -> None:
    """Bridge shadow (away from the light), nostrils, tip highlight."""
    cv2.polylines(img, [_pts(p[27:31] + (0.02 * unit * math.cos(light + math.pi), 0))], False, tuple(skin * 0.8), 1,
                  cv2.LINE_AA, SHIFT)
    cv2.polylines(img, [_pts(p[31:36])], False, tuple(skin * 0.6), 1, cv2.LINE_AA, SHIFT)
    for i in (32, 34):
        cv2.circle(img, tuple(_pts(p[i])), int(0.018 * unit * 16), tuple(skin * 0.35), -1, cv2.LINE_AA, SHIFT)
    cv2.circle(img, tuple(_pts(p[30])), int(0.025 * unit * 16), tuple(np.minimum(skin * 1.12, 255)), -1,
               cv2.LINE_AA, SHIFT)


def occluders(img: np.ndarray, p: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Hands, glasses or hair strands over the face; returns their mask."""
    occ = np.zeros(img.shape[:2], np.uint8)
    unit = float(np.linalg.norm(p[45] - p[36])) / 0.67
    if rng.random() < 0.25 * amount:  # a hand over the mouth or a cheek
        centre = p[rng.choice([57, 3, 13])] + rng.normal(0, 0.05 * unit, 2)
        col = _colour(SKIN, rng)
        axes = (int(0.22 * unit * 16), int(0.15 * unit * 16))
        angle = rng.uniform(0, 180)
        for target in (img, occ):
            cv2.ellipse(target, tuple(_pts(centre)), axes, angle, 0, 360, col if target is img else 255, -1,
                        cv2.LINE_AA, SHIFT)
            for k in range(4):
                d = np.array([math.cos(math.radians(angle) + 0.35 * (k - 1.5)),
                              math.sin(math.radians(angle) + 0.35 * (k - 1.5))])
                cv2.line(target, tuple(_pts(centre)), tuple(_pts(centre + d * 0.38 * unit)),
                         col if target is img else 255, max(1, int(0.06 * unit)), cv2.LINE_AA, SHIFT)
    if rng.random() < 0.25 * amount:  # glasses
        col = tuple(int(v) for v in rng.integers(0, 90, 3))
        r = int(0.13 * unit * 16)
        for target in (img, occ):
            for c in (p[36:42].mean(0), p[42:48].mean(0)):
                cv2.circle(target, tuple(_pts(c)), r, col if target is img else 255, 2, cv2.LINE_AA, SHIFT)
            cv2.line(target, tuple(_pts(p[39] + (0.04 * unit, 0))), tuple(_pts(p[42] - (0.04 * unit, 0))),
                     col if target is img else 255, 1, cv2.LINE_AA, SHIFT)
    if rng.random() < 0.2 * amount:  # hair strands across the brow and an eye
        col = _colour(HAIR, rng)
        start = p[19] + (rng.uniform(-0.2, 0.2) * unit, -0.3 * unit)
        for _ in range(rng.integers(2, 5)):
            pts = np.array([start + (k * 0.1 * unit, k * 0.13 * unit + rng.normal(0, 0.02 * unit)) for k in range(5)])
            for target in (img, occ):
                cv2.polylines(target, [_pts(pts)], False, col if target is img else 255, 1, cv2.LINE_AA, SHIFT)
            start = start + (0.04 * unit, 0)
    return occ


def photo_look(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Uneven light, colour cast, blur, sensor noise and JPEG, scaled by ``amount``."""
    if amount <= 0:
        return img
    size = img.shape[0]
    f = img.astype(np.float32)
    light = cv2.resize(rng.uniform(1 - 0.35 * amount, 1 + 0.25 * amount, (3, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    f *= light[..., None] * rng.uniform(1 - 0.1 * amount, 1 + 0.1 * amount, 3).astype(np.float32)
    sigma = rng.uniform(0.0, 1.3 * amount)
    if sigma > 0.25:
        f = cv2.GaussianBlur(f, (0, 0), sigma)
    noise = np.empty_like(f)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    sd = float(rng.uniform(1.5, 7) * amount)
    cv2.randn(noise, (0.0, 0.0, 0.0), (sd, sd, sd))  # per channel: a scalar would only reach the first
    f += noise
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < amount:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 80))])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
