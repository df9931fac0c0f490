"""A procedural 3-D face (used by the simulator and, as a mean face, by head-pose estimation):
mean landmarks, identity and expression modes, pose, pinhole camera,
and the two label semantics of the same face.

Head frame: x to the image right of a frontal face (the subject's left), y down, z towards
the camera; one unit is about the face's width. Landmarks follow ``facesynthetics70``: the
68 iBUG points, then the subject's right pupil (image left) and left pupil.

The upper head and the lower face are two ellipsoids. That is enough for the label gap: a
*projected* jaw point is a fixed surface point of the lower ellipsoid, seen or not, while a
person labels the jaw on the visible outline. Each jaw point lies on a meridian of the lower
ellipsoid (from its front pole out through the point to the frontal outline); under yaw the
far-side points slide along their meridian to where it meets the silhouette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gapkit.schemes import get_scheme

FLIP70 = np.array(get_scheme("facesynthetics70").flip)
BROWS = np.arange(17, 27)
SKULL = dict(centre=(0.0, -0.22, -0.42), radii=(0.53, 0.66, 0.52))
JAW = dict(centre=(0.0, -0.10, -0.40), radii=(0.511, 0.675, 0.46))  # jaw points at ~78 deg: near the outline
BROW_HALF_THICKNESS = 0.028  # people click the brow's upper edge; projections give its mid-line


def mean_face_2d() -> np.ndarray:
    """(70, 2) frontal layout; the subject's right half is written out, the left mirrored."""
    p = np.full((70, 2), np.nan)
    for i in range(9):  # jaw: the image-left ear (0) down to the chin (8)
        phi = (i / 8) * (math.pi / 2)
        p[i] = -0.5 * math.cos(phi) ** 0.85, -0.14 + 0.70 * math.sin(phi) ** 1.15
    for i in range(5):  # subject's right brow, outer -> inner
        p[17 + i] = -0.40 + 0.075 * i, -0.295 - 0.055 * math.sin(math.pi * (i + 0.6) / 5.2)
    for i in range(4):
        p[27 + i] = 0.0, -0.20 + 0.09 * i
    p[31], p[32], p[33] = (-0.095, 0.125), (-0.048, 0.142), (0.0, 0.150)
    p[36:42] = [(-0.335, -0.170), (-0.275, -0.207), (-0.195, -0.207), (-0.130, -0.163), (-0.195, -0.142),
                (-0.275, -0.142)]
    p[48], p[49], p[50], p[51] = (-0.185, 0.305), (-0.115, 0.262), (-0.045, 0.245), (0.0, 0.254)
    p[59], p[58], p[57] = (-0.120, 0.352), (-0.055, 0.378), (0.0, 0.382)
    p[60], p[61], p[62] = (-0.150, 0.303), (-0.055, 0.287), (0.0, 0.290)
    p[67], p[66] = (-0.055, 0.312), (0.0, 0.316)
    p[68] = (-0.232, -0.176)
    for i, j in enumerate(FLIP70):
        if np.isnan(p[j]).any():
            p[j] = -p[i, 0], p[i, 1]
    return p


MEAN_2D = mean_face_2d()


def _mode(**moves: tuple[list[int] | np.ndarray, tuple[float, float, float]]) -> np.ndarray:
    """A (70, 3) displacement field, symmetric: x moves are mirrored onto the flip partners."""
    d = np.zeros((70, 3))
    for idx, (dx, dy, dz) in moves.values():
        for i in idx:
            sx = 1.0 if MEAN_2D[i, 0] <= 1e-9 else -1.0  # written for the image-left half
            d[i] += (sx * dx, dy, dz)
    return d


def _side(idx) -> list[int]:
    """Points of the list and their mirror partners."""
    return sorted(set(idx) | set(FLIP70[list(idx)].tolist()))


# Identity: shape modes in head units per unit coefficient.
IDENTITY_MODES = np.stack([
    np.concatenate([MEAN_2D * (0.08, 0.0), np.zeros((70, 1))], 1),           # face width
    np.concatenate([MEAN_2D * (0.0, 0.09), np.zeros((70, 1))], 1),           # face length
    _mode(jaw=(_side([5, 6, 7]), (-0.035, 0.0, 0.0)), chin=([8], (0, 0.03, 0))),  # square vs pointed jaw
    _mode(eyes=(_side(range(36, 42)) + [68, 69], (-0.02, 0.0, 0.0))),         # eye spacing
    _mode(nose=(list(range(30, 36)), (0.0, 0.03, 0.04))),                    # nose length / depth
    _mode(mouth=(_side([48, 60]), (-0.025, 0.0, 0.0))),                      # mouth width
    _mode(brows=(list(range(17, 27)), (0.0, -0.03, 0.0))),                   # brow height
])
# Expressions: mouth open, smile, brow raise, eye closing.
EXPRESSION_MODES = np.stack([
    _mode(lower_lip=(_side([55, 56, 57, 64, 65, 66]), (0, 0.09, 0)), chin=(_side([6, 7, 8]), (0, 0.05, 0))),
    _mode(corners=(_side([48, 54, 60, 64]), (-0.03, -0.03, -0.01))),
    _mode(brows=(list(range(17, 27)), (0.0, -0.04, 0.0))),
    _mode(upper_lid=(_side([37, 38, 43, 44]), (0, 0.035, 0)), lower_lid=(_side([40, 41, 46, 47]), (0, -0.01, 0))),
])


@dataclass
class Face:
    """One face's geometry: 3-D landmarks and pose, in head units."""

    points3d: np.ndarray   # (70, 3) projected-semantics landmarks in the head frame
    normals: np.ndarray    # (70, 3) outward surface normals there
    jaw_phi: np.ndarray    # (17,) direction of each jaw point's meridian (0 = chin, -pi/2 = image-left ear)
    jaw_t: np.ndarray      # (17,) how far down its meridian the projected point sits (pi/2 = frontal outline)
    rotation: np.ndarray   # (3, 3) head -> camera
    position: np.ndarray   # (3,) head origin in camera coordinates (z > 0 is in front)
    focal: float           # pixels
    centre: tuple[float, float]  # principal point, pixels


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head -> camera (OpenCV: z forward) rotation from degrees. Positive yaw turns the nose to
    the image right, positive pitch tilts it up, positive roll turns the face clockwise."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    # The head's z points at the camera, the camera's z away from it.
    return np.diag([1.0, 1.0, -1.0]) @ rz @ rx @ ry


def ellipsoid_front_z(x: np.ndarray, y: np.ndarray, which: dict) -> np.ndarray:
    (cx, cy, cz), (a, b, c) = which["centre"], which["radii"]
    return cz + c * np.sqrt(np.clip(1 - ((x - cx) / a) ** 2 - ((y - cy) / b) ** 2, 0, None))


def ellipsoid_normal(p: np.ndarray, which: dict) -> np.ndarray:
    (cx, cy, cz), (a, b, c) = which["centre"], which["radii"]
    n = np.stack([(p[..., 0] - cx) / a ** 2, (p[..., 1] - cy) / b ** 2, (p[..., 2] - cz) / c ** 2], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def jaw_meridian(phi: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Points of the lower ellipsoid at meridian directions ``phi`` and polar angles ``t``."""
    (cx, cy, cz), (a, b, c) = JAW["centre"], JAW["radii"]
    return np.stack([cx + a * np.sin(phi) * np.sin(t), cy + b * np.cos(phi) * np.sin(t), cz + c * np.cos(t)], -1)


def build_face(identity: np.ndarray, expression: np.ndarray, yaw: float, pitch: float, roll: float,
               size: int, scale: float = 1.0, shift: tuple[float, float] = (0.0, 0.0)) -> Face:
    """Landmarks and pose for coefficients ``identity`` (7,) and ``expression`` (4,); ``shift`` moves
    the face in the image by a fraction of its size."""
    d = np.einsum("m,mkj->kj", identity, IDENTITY_MODES) + np.einsum("m,mkj->kj", expression, EXPRESSION_MODES)
    xy = MEAN_2D + d[:, :2]
    (cx, cy, _), (a, b, _) = JAW["centre"], JAW["radii"]
    u, v = (xy[:17, 0] - cx) / a, (xy[:17, 1] - cy) / b
    phi, t = np.arctan2(u, v), np.arcsin(np.clip(np.hypot(u, v), 0, 0.99))
    pts = np.zeros((70, 3))
    pts[:17] = jaw_meridian(phi, t)
    x, y = xy[17:, 0], xy[17:, 1]
    pts[17:, :2] = xy[17:]
    pts[17:, 2] = np.maximum(ellipsoid_front_z(x, y, SKULL), ellipsoid_front_z(x, y, JAW))
    normals = np.zeros((70, 3))
    normals[:17] = ellipsoid_normal(pts[:17], JAW)
    on_skull = ellipsoid_front_z(x, y, SKULL) >= ellipsoid_front_z(x, y, JAW)
    normals[17:] = np.where(on_skull[:, None], ellipsoid_normal(pts[17:], SKULL), ellipsoid_normal(pts[17:], JAW))
    # Relief: the nose stands out, the eyes sit in, the lips forward.
    for i, dz in {27: 0.03, 28: 0.07, 29: 0.11, 30: 0.16, 31: 0.06, 32: 0.08, 33: 0.10, 34: 0.08, 35: 0.06}.items():
        pts[i, 2] += dz
    pts[36:48, 2] -= 0.02
    pts[48:68, 2] += 0.02
    pts[17:, 2] += d[17:, 2]
    focal = 3.5 * size  # a portrait lens: the camera sits about six face widths away
    distance = focal / (0.5 * size * scale)  # the jaw spans about half the image
    return Face(pts, normals, phi, t, rotation(yaw, pitch, roll),
                np.array([shift[0] * distance, shift[1] * distance, distance]), focal,
                ((size - 1) / 2, (size - 1) / 2))


def to_camera(face: Face, p: np.ndarray) -> np.ndarray:
    return p @ face.rotation.T + face.position


def project(face: Face, p: np.ndarray) -> np.ndarray:
    """Head-frame points (..., 3) -> 0-based pixel (x, y)."""
    c = to_camera(face, p)
    return np.stack([face.focal * c[..., 0] / c[..., 2] + face.centre[0],
                     face.focal * c[..., 1] / c[..., 2] + face.centre[1]], -1)


def facing(face: Face, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Cosine between the normal and the direction to the camera (> 0: the surface faces it)."""
    c = to_camera(face, p)
    nc = n @ face.rotation.T
    return -(nc * c).sum(-1) / np.linalg.norm(c, axis=-1)


_T = np.linspace(0.0, 0.9 * math.pi, 163)


def human_points3d(face: Face) -> np.ndarray:
    """(68, 3): where a person would put the 68 points on this posed face.

    Jaw points go to the visible outline: each moves along its meridian to the silhouette,
    inwards on the far side under yaw, and to the jawline elsewhere. Brow points move to the
    brow's upper edge. Everything else is where the projection is.
    """
    p = face.points3d[:68].copy()
    mer = jaw_meridian(face.jaw_phi[:, None], np.broadcast_to(_T, (17, len(_T))))
    seen = facing(face, mer, ellipsoid_normal(mer, JAW)) > 0
    # The first angle down each meridian that faces away from the camera is its silhouette.
    first_hidden = np.where(seen.all(1), len(_T) - 1, np.argmin(seen, axis=1))
    t_sil = _T[np.maximum(first_hidden - 1, 0)]
    # On the near side the silhouette runs round the back of the ellipsoid, past where a jaw
    # ends; people follow the jawline there, the ellipsoid's frontal outline (t = 90 deg).
    p[:17] = jaw_meridian(face.jaw_phi, np.minimum(t_sil, math.pi / 2))
    p[BROWS, 1] -= BROW_HALF_THICKNESS
    return p


def visibility(face: Face) -> np.ndarray:
    """(70,) True where the landmark's surface faces the camera or lies on the outline
    (self-occlusion only; a point on the silhouette is seen, edge-on)."""
    return facing(face, face.points3d, face.normals) > -0.08


def head_outline(face: Face, m: int = 40) -> np.ndarray:
    """(P, 2) pixel points whose convex hull is the head and face silhouette."""
    u, v = np.meshgrid(np.linspace(0, 2 * math.pi, m, endpoint=False), np.linspace(0.0, math.pi, m // 2))
    out = []
    for which, vmax in ((SKULL, 0.62 * math.pi), (JAW, math.pi)):
        (cx, cy, cz), (a, b, c) = which["centre"], which["radii"]
        keep = v <= vmax  # the skull's lower half hides inside the jaw
        p = np.stack([cx + a * np.sin(v) * np.cos(u), cy - b * np.cos(v), cz + c * np.sin(v) * np.sin(u)], -1)
        out.append(p[keep])
    return project(face, np.concatenate(out))
