"""Run a model file (``.gkm`` or its ``.onnx`` export) on faces and write a manifest of predictions.

Input is any readable dataset or manifest (labelled faces: their NME is measured) or a plain
folder of images (or one image). Faces are cropped by the model's own crop policy, either from
the label box (``boxes="labels"``, the benchmark's protocol) or from a face detector's box
through the box calibration the model file carries (``boxes="detect"``, one record per face
found). The detector is the one the model file names beside its calibration (built from the
registry in :mod:`gapkit.detect`; OpenCV's Haar cascade where the file names none, as files
from before names were kept were calibrated on it). The walk
streams: one image decoded at a time and at most ``batch_size`` crops held, so memory does not
grow with the input. A two-stage model's second stage refines each batch's points on the
decoded images (held only while their batch is). Unreadable images, files that are not images, faces
the detector does not find and records in another scheme are reported and skipped.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from gapkit.crop import apply_affine, crop_box, invert_affine
from gapkit.detect import DETECTORS, LEGACY_DETECTOR, FaceDetector, build_detector, match
from gapkit.errors import ConfigError, InputError, ModelError, Problem
from gapkit.faceset import DataSource, Report, stream
from gapkit.formats import guess_format
from gapkit.formats.manifest import ManifestWriter
from gapkit.images import IMAGE_EXTENSIONS
from gapkit.metrics import auc, failure_rate, nme
from gapkit.records import FaceRecord
from gapkit.schemes import get_scheme
from gapkit.train.detector import Detector, ModelMeta, crop_points
from gapkit.train.onnx import OnnxDetector

Boxes = Literal["labels", "detect"]


@dataclass
class PredictReport:
    """What a prediction run did: faces written, problems (skipped), and for labelled faces
    the per-face NME (fraction of the normaliser) and the faces the detector missed."""

    model: str
    boxes: str
    faces: int = 0
    images: int = 0
    missed: int = 0
    problems: list[Problem] = field(default_factory=list)
    nmes: list[float] = field(default_factory=list)
    seconds: float = 0.0
    normaliser: str = "inter_ocular"

    def scores(self, threshold: float = 0.08) -> dict | None:
        """NME %, FR and AUC at ``threshold`` over the predicted labelled faces; with detector boxes
        also ``fr_all``, each missed face counted as a failure. None without labelled faces."""
        if not self.nmes:
            return None
        e = np.asarray(self.nmes)
        fr = failure_rate(e, threshold)
        out = {"normaliser": self.normaliser, "n": len(e), "nme_pct": float(100 * e.mean()), "fr": fr,
               "auc": auc(e, threshold), "threshold": threshold}
        if self.boxes == "detect":
            total = len(e) + self.missed
            out |= {"found": len(e), "missed": self.missed, "fr_all": (fr * len(e) + self.missed) / total}
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "boxes": self.boxes, "faces": self.faces, "images": self.images,
                "labelled_faces_scored": len(self.nmes), "missed": self.missed, "seconds": round(self.seconds, 3),
                "faces_per_s": self.faces / self.seconds if self.seconds else None, "scores": self.scores(),
                "skipped": len(self.problems), "problems": [p.to_dict() for p in self.problems]}


@dataclass
class _Face:
    id: str
    image: str
    width: int
    height: int
    split: str
    box: tuple[float, float, float, float]
    crop: np.ndarray
    matrix: np.ndarray
    label: FaceRecord | None = None
    detection: list[float] | None = None
    img: np.ndarray | None = None  # the decoded image, kept only for a model's second stage


def _image_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def _is_image_input(path: Path) -> bool:
    """A plain image, or a folder holding images and no labels any format reads."""
    if path.is_file():
        return path.suffix.lower() in IMAGE_EXTENSIONS
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*"))


def _items(src: DataSource, scheme: str, report: PredictReport) -> tuple[bool, Iterator[FaceRecord | Path]]:
    """(labelled, stream): the records of a dataset in ``scheme``, or the files of an image folder."""
    fmt = src.format
    if fmt is None:
        try:
            fmt = guess_format(src.path)
        except InputError:
            if not _is_image_input(src.path):
                raise
            fmt = "images"
    if fmt == "images":
        if src.splits:
            raise ConfigError("--split needs a dataset with splits; a folder of images has none")
        return False, _image_files(src.path)

    def records() -> Iterator[FaceRecord]:
        rep = Report(problems=report.problems)  # the readers' problems land in the run's list
        for rec in stream(src.model_copy(update={"format": fmt}), report=rep):
            if rec.scheme != scheme:
                report.problems.append(Problem(rec.image, None, f"record {rec.id!r} is in scheme {rec.scheme}; the "
                                                                f"model predicts {scheme} (gapkit convert --scheme "
                                                                f"{scheme} maps it first)"))
                continue
            yield rec

    return True, records()


def _faces(items: Iterator[FaceRecord | Path], labelled: bool, root: Path, meta: ModelMeta, boxes: Boxes,
           detector: FaceDetector | None, report: PredictReport,
           progress: Callable[[int], None] | None, keep_image: bool = False) -> Iterator[_Face]:
    """Crops of every face, image by image (consecutive records of one image share a decode);
    with ``keep_image``, each face also holds its decoded image."""
    size, margin = meta.size, meta.margin
    cal = meta.box_calibration()
    base = root if root.is_dir() else root.parent
    key = (lambda r: r.image) if labelled else (lambda p: str(p))
    for image, group in itertools.groupby(items, key=key):
        recs = list(group)
        if progress:
            progress(1)
        img = cv2.imread(image, cv2.IMREAD_COLOR)
        if img is None:
            why = "missing or unreadable image" if labelled else (
                "not an image file" if Path(image).suffix.lower() not in IMAGE_EXTENSIONS else "unreadable image")
            report.problems += [Problem(image, None, f"record {r.id!r}: {why}" if labelled else why) for r in recs]
            continue
        report.images += 1
        h, w = img.shape[:2]
        kept = img if keep_image else None
        if boxes == "labels":
            for r in recs:
                box = r.bbox or r.landmark_box()
                crop, m = crop_box(img, box, size, margin)
                yield _Face(r.id, r.image, w, h, r.split, tuple(map(float, box)), crop, m, r, img=kept)
            continue
        found = detector(img)
        found = found[np.argsort(-found[:, 2] * found[:, 3], kind="stable")] if len(found) else found
        free = list(range(len(found)))
        for r in recs if labelled else []:
            j = match(found[free], r.landmark_box()) if free else None
            if j is None:
                report.missed += 1
                report.problems.append(Problem(image, None, f"record {r.id!r}: the face detector found no face here"))
                continue
            det = found[free.pop(j)]
            box = cal(det)
            crop, m = crop_box(img, box, size, margin)
            yield _Face(r.id, r.image, w, h, r.split, box, crop, m, r, det.tolist(), kept)
        if not labelled and not free:
            report.problems.append(Problem(image, None, "the face detector found no face"))
        stem = recs[0].id if labelled else Path(image).relative_to(base).as_posix()
        for k, i in enumerate(free):  # faces without a label, or in a plain image
            box = cal(found[i])
            crop, m = crop_box(img, box, size, margin)
            yield _Face(f"{stem}#{'extra' if labelled else ''}{k}", image, w, h, recs[0].split if labelled else "",
                        box, crop, m, None, found[i].tolist(), kept)


def model_detector(model: Detector | OnnxDetector) -> FaceDetector:
    """The face detector ``model``'s box calibration was fitted on, as its file names it (the
    default detector where it names none, as files from before the name was kept); ModelError
    when this gapkit has no detector of that name."""
    try:
        return build_detector(model.meta.detector or LEGACY_DETECTOR)  # no name: a file from before names
    except ConfigError:
        raise ModelError(f"{model.name}: the model's box calibration belongs to the face detector "
                         f"{model.meta.detector!r}, which this gapkit does not have (it has "
                         f"{', '.join(DETECTORS)}); use --boxes labels") from None


def predict_to_manifest(model: Detector | OnnxDetector, src: DataSource, out: str | Path, boxes: Boxes = "labels",
                        batch_size: int = 64, overwrite: bool = False, detector: FaceDetector | None = None,
                        progress: Callable[[int], None] | None = None) -> PredictReport:
    """Predict every face of ``src`` and write the records to the manifest ``out`` (atomically).
    With ``boxes="detect"``, faces are found by ``detector``, by default the one the model file
    names (:func:`model_detector`)."""
    meta = model.meta
    scheme = get_scheme(meta.scheme)
    report = PredictReport(model.name, boxes)
    labelled, items = _items(src, meta.scheme, report)
    if boxes == "labels" and not labelled:
        raise ConfigError(f"{src.path} holds images without labels: there is no label box to crop from; "
                          "use --boxes detect")
    if boxes == "detect":
        if meta.box_calibration() is None:
            raise ModelError(f"{model.name}: the model file carries no detector-box calibration (it was trained "
                             "without one); use --boxes labels, or retrain with gapkit train")
        if detector is None:
            detector = model_detector(model)
    t0 = time.perf_counter()
    attrs = {"model": model.name, "boxes": boxes} | ({"detector": getattr(detector, "name", "")} if detector else {})
    with ManifestWriter(out, overwrite=overwrite) as writer:
        refiner = model.refiner
        faces = _faces(items, labelled, Path(src.path), meta, boxes, detector, report, progress, refiner is not None)
        while batch := list(itertools.islice(faces, batch_size)):
            crop_pts = crop_points(model, np.stack([f.crop for f in batch]))
            pts = [apply_affine(invert_affine(f.matrix), p) for f, p in zip(batch, crop_pts, strict=True)]
            if refiner is not None:  # the second stage reads the image around stage 1's points
                pts = list(refiner.on_images([f.img for f in batch], np.stack(pts)))
            scored = [i for i, f in enumerate(batch) if f.label is not None]
            errors = dict(zip(scored, nme(np.stack([pts[i] for i in scored]),
                                          np.stack([batch[i].label.points for i in scored]), scheme,
                                          report.normaliser), strict=True)) if scored else {}
            for i, (f, p) in enumerate(zip(batch, pts, strict=True)):
                extra = {"detection": f.detection} if f.detection is not None else {}
                if i in errors:
                    extra["nme"] = float(errors[i])
                    report.nmes.append(float(errors[i]))
                writer.write(FaceRecord(id=f.id, image=f.image, width=f.width, height=f.height, scheme=meta.scheme,
                                        points=p, bbox=f.box, source=model.name, split=f.split,
                                        attributes=attrs | extra))
            report.faces += len(batch)
        report.seconds = time.perf_counter() - t0
        if not report.faces:
            raise InputError(f"{src.path}: no face could be predicted ({len(report.problems)} skipped"
                             + (f", first: {report.problems[0]}" if report.problems else "") + ")")
    return report
