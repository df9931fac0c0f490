"""Face boxes from a named face detector, each shipping its weights inside a dependency so
nothing downloads: dlib's HOG detector (the default, :data:`DEFAULT_DETECTOR`) and OpenCV's
bundled Haar cascades (``cv2.data``). Boxes are 0-based pixel (x, y, w, h).

Detectors are named in a registry (:data:`DETECTORS`): a detector's ``name`` is its ``kind``,
or ``kind:variant``, and model files record it beside the box calibration fitted on it, so
:func:`build_detector` builds the same detector back from a model file. A new detector is one
class with a ``kind``, a ``name`` and a ``__call__`` giving (M, 4) boxes, decorated with
:func:`register_detector`.

A detector's box is not a landmark box: the Haar box, for one, is square, sits higher and is wider
than the box around the 68 points. Crops from detections therefore go through a
:class:`BoxCalibration` fitted on *training* faces, which predicts the landmark box from a
detection; the crop policy (:mod:`gapkit.crop`) then applies unchanged.

Which detection belongs to which labelled face is decided by :func:`match` (the detection's
centre inside the label box, its size within a factor of two): the label only pairs faces
up, as 300-W's own detector boxes were paired; the crop comes from the detection alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import cv2
import numpy as np

from gapkit.errors import ConfigError, GapkitError
from gapkit.records import FaceRecord

Box = tuple[float, float, float, float]


class FaceDetector(Protocol):
    """What the box protocol needs of a face detector: a ``name`` that :func:`build_detector`
    reads back (model files record it), and (M, 4) boxes (x, y, w, h) in an image's pixels."""

    name: str

    def __call__(self, img: np.ndarray) -> np.ndarray: ...


D = TypeVar("D", bound=type)
DETECTORS: dict[str, type] = {}  # kind -> class, in registration order
# dlib's HOG detector without upsampling: on LFPW test it missed 1 of 224 faces where Haar missed
# 5, at the same NME from its calibrated boxes and in 0.6x the time (benchmarks/face_detectors.py).
DEFAULT_DETECTOR = "dlib-hog:0"
# What model files and benchmark runs from before detectors were named used: their calibrations
# belong to it, so a file that names no detector is read as this one, never as the default.
LEGACY_DETECTOR = "opencv-haar"


def register_detector(cls: D) -> D:
    """Class decorator: name ``cls`` in :data:`DETECTORS` by its ``kind``. Its instances' ``name``
    must be ``kind`` or ``kind:variant``; the variant is passed back as the first argument of the
    constructor by :func:`build_detector`."""
    kind = cls.kind
    if kind in DETECTORS or ":" in kind:
        raise ValueError(f"face detector kind {kind!r} is taken or holds ':'")
    DETECTORS[kind] = cls
    return cls


def build_detector(name: str | None = None) -> FaceDetector:
    """The detector ``name`` names (``kind`` or ``kind:variant``, as a detector's ``name`` and a
    model file's ``detector`` read); the default (:data:`DEFAULT_DETECTOR`) for None. An unknown
    kind is a ConfigError that lists the known ones."""
    kind, _, variant = (name or DEFAULT_DETECTOR).partition(":")
    if kind not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; this gapkit has {', '.join(DETECTORS)}")
    return DETECTORS[kind](variant) if variant else DETECTORS[kind]()


@register_detector
class HaarDetector:
    """OpenCV's Haar cascade on a greyscale copy scaled to at most ``max_side`` pixels; the
    variant in its name is the cascade file of ``cv2.data.haarcascades``."""

    kind = "opencv-haar"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", max_side: int = 640,
                 scale_factor: float = 1.1, min_neighbors: int = 4, min_face: float = 0.08):
        path = cv2.data.haarcascades + cascade
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise GapkitError(f"{path}: OpenCV could not load the Haar cascade")
        self.name = f"{self.kind}:{cascade}"
        self.max_side, self.scale_factor, self.min_neighbors, self.min_face = max_side, scale_factor, min_neighbors, min_face

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """(M, 4) boxes (x, y, w, h) in ``img``'s pixels."""
        grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        s = min(1.0, self.max_side / max(grey.shape))
        small = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else grey
        small = cv2.equalizeHist(small)
        side = max(24, int(self.min_face * min(small.shape)))
        found = self.cascade.detectMultiScale(small, self.scale_factor, self.min_neighbors, minSize=(side, side))
        boxes = np.asarray(found, float).reshape(-1, 4)
        # A box in the small image covers pixels [x, x + w); map its edges back, not its centres.
        return boxes / s


@register_detector
class DlibHogDetector:
    """dlib's HOG + linear SVM frontal face detector (dlib-bin, a dependency); its weights ship
    inside dlib, so nothing downloads. The variant is the upsampling count (0: faces of 80 px and
    up, as in 300-W's photographs; 1: down to about 40 px, slower)."""

    kind = "dlib-hog"

    def __init__(self, upsample: str | int = 0):
        try:
            import dlib  # deferred: dlib-bin has no wheel for every platform; the error says what to do
        except ImportError:
            raise ConfigError("the dlib-hog face detector needs dlib: pip install dlib-bin "
                              "(or choose --face-detector opencv-haar)") from None
        try:
            self.upsample = int(upsample)
        except ValueError:
            raise ConfigError(f"dlib-hog:{upsample}: the variant is the upsampling count, e.g. dlib-hog:0") from None
        self.detector = dlib.get_frontal_face_detector()
        self.name = f"{self.kind}:{self.upsample}"

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """(M, 4) boxes (x, y, w, h) in ``img``'s pixels."""
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img
        rects = self.detector(np.ascontiguousarray(rgb), self.upsample)
        return np.array([(r.left(), r.top(), r.width(), r.height()) for r in rects], float).reshape(-1, 4)


def match(boxes: np.ndarray, label_box: Box) -> int | None:
    """The detection that belongs to the labelled face: its centre inside the label box and its
    side within a factor of two of the label box's, nearest centre first; None when none does."""
    x, y, w, h = label_box
    cx, cy, side = x + w / 2, y + h / 2, np.sqrt(w * h)
    best, best_d = None, np.inf
    for i, (bx, by, bw, bh) in enumerate(boxes):
        dx, dy = bx + bw / 2, by + bh / 2
        if not (x <= dx <= x + w and y <= dy <= y + h and 0.5 <= np.sqrt(bw * bh) / side <= 2):
            continue
        d = np.hypot(dx - cx, dy - cy)
        if d < best_d:
            best, best_d = i, d
    return best


@dataclass(frozen=True)
class BoxCalibration:
    """Landmark box from a detection, as offsets and sizes in units of the detection's side:
    centre (cx + dx * s, cy + dy * s), size (sw * s, sh * s). Medians: a few poor matches do
    not move it."""

    dx: float
    dy: float
    sw: float
    sh: float
    n: int  # faces it was fitted on

    @classmethod
    def fit(cls, detections: np.ndarray, label_boxes: np.ndarray) -> BoxCalibration:
        d, g = np.asarray(detections, float).reshape(-1, 4), np.asarray(label_boxes, float).reshape(-1, 4)
        if len(d) < 5:
            raise GapkitError(f"the detector found only {len(d)} training faces; at least 5 are needed "
                              "to calibrate its boxes")
        s = np.sqrt(d[:, 2] * d[:, 3])
        return cls(float(np.median((g[:, 0] + g[:, 2] / 2 - d[:, 0] - d[:, 2] / 2) / s)),
                   float(np.median((g[:, 1] + g[:, 3] / 2 - d[:, 1] - d[:, 3] / 2) / s)),
                   float(np.median(g[:, 2] / s)), float(np.median(g[:, 3] / s)), len(d))

    def __call__(self, box: Sequence[float]) -> Box:
        x, y, w, h = box
        s = float(np.sqrt(w * h))
        cx, cy = x + w / 2 + self.dx * s, y + h / 2 + self.dy * s
        return (cx - self.sw * s / 2, cy - self.sh * s / 2, self.sw * s, self.sh * s)


def detect_records(records: Sequence[FaceRecord], detector: Callable[[np.ndarray], np.ndarray] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[np.ndarray | None]:
    """For each record, the raw detection (x, y, w, h) that :func:`match` pairs with its face, or
    None where the detector missed it (by default the default detector). Each image is decoded
    and searched once."""
    detector = detector or build_detector()
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_image[r.image].append(i)
    out: list[np.ndarray | None] = [None] * len(records)
    for k, (path, idx) in enumerate(by_image.items()):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise GapkitError(f"{path}: missing or unreadable image")
        boxes = detector(img)
        for i in idx:
            j = match(boxes, records[i].landmark_box())
            out[i] = None if j is None else boxes[j]
        if progress:
            progress(k + 1, len(by_image))
    return out


@dataclass
class DetectedFaces:
    """Test faces as a detector finds them: ``records`` (the found ones, each with ``bbox`` set
    to the calibrated detection), ``index`` (their positions in the input) and ``missed``."""

    records: list[FaceRecord]
    index: np.ndarray
    missed: list[str]
    calibration: BoxCalibration
    detector: str


def calibrate(train: Sequence[FaceRecord], detector: FaceDetector | None = None, max_train: int = 400,
              seed: int = 0) -> BoxCalibration:
    """The :class:`BoxCalibration` of ``detector`` (by default the default detector) on up to
    ``max_train`` of the ``train`` faces (a seeded draw); GapkitError when it finds fewer than 5."""
    detector = detector or build_detector()
    pick = np.sort(np.random.default_rng(seed).permutation(len(train))[:max_train])
    sample = [train[i] for i in pick]
    found = [(d, r.landmark_box()) for d, r in zip(detect_records(sample, detector), sample, strict=True)
             if d is not None]
    return BoxCalibration.fit(np.array([d for d, _ in found]), np.array([g for _, g in found]))


def detector_boxes(test: Sequence[FaceRecord], train: Sequence[FaceRecord], detector: FaceDetector | None = None,
                   max_train: int = 400, seed: int = 0) -> DetectedFaces:
    """Detect ``test`` faces and give each found one its calibrated box; the calibration is
    fitted on up to ``max_train`` of the ``train`` faces (never on the test faces)."""
    detector = detector or build_detector()
    cal = calibrate(train, detector, max_train, seed)
    dets = detect_records(test, detector)
    index = np.array([i for i, d in enumerate(dets) if d is not None], int)
    records = [test[i].model_copy(update={"bbox": cal(dets[i])}) for i in index]
    missed = [test[i].id for i, d in enumerate(dets) if d is None]
    return DetectedFaces(records, index, missed, cal, detector.name)
