"""A trained detector as users hold it: one file (``.gkm``), a zip of ``meta.json`` (scheme,
input size, crop margin and policy, box calibration, training set digest, strategy, seed,
gapkit version) and ``weights.npz``. Loading reads plain arrays (``allow_pickle=False``),
never a pickle, and checks the file's kind, version, weight digest and shapes.

:class:`Detector` runs the torch weights (``gapkit.train.onnx`` runs an exported ``.onnx``).
Both take (B, 3, S, S) float32 crops in [-1, 1] and give (B, K, 2) crop-pixel (x, y), so
:func:`crop_points` (flip averaging) serves either. A two-stage model (:mod:`gapkit.train.two_stage`)
also holds its second stage, a :class:`gapkit.refine.Refiner` on image points, whose arrays
lie beside stage 1's in ``weights.npz`` (``refine_ref``, ``refine.*``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from gapkit.crop import CROP_POLICY
from gapkit.detect import BoxCalibration
from gapkit.devices import resolve_device
from gapkit.errors import ModelError
from gapkit.modelfile import DETECTOR, pack_arrays, read_model_file, weights_digest, write_model_file
from gapkit.refine import Refiner, RefineReport, read_refiner
from gapkit.schemes import get_scheme
from gapkit.version import __version__

FILE_KIND = "gapkit-detector"
FILE_VERSION = 1


class TrainSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int                      # faces
    digest: str                 # sha256 (first 16 hex) of the face ids, in training order
    parts: list[dict] = []      # per source: n, share, digest


class ModelMeta(BaseModel):
    """What a model file says about itself (``meta.json``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["gapkit-detector"] = FILE_KIND
    file_version: int = FILE_VERSION
    gapkit_version: str = __version__
    scheme: str
    num_points: int
    backbone: str
    width: int
    size: int                   # crop side in pixels
    margin: float               # crop side over the face box's larger side
    crop_policy: str = CROP_POLICY
    flip_test: bool = True
    strategy: str = "real_only"
    seed: int = 0
    train_set: TrainSet
    train: dict = {}            # the TrainConfig it was trained with
    calibration: dict | None = None  # BoxCalibration: landmark box from a detector box
    detector: str | None = None      # the face detector the calibration belongs to
    # the second stage (gapkit.train.two_stage): used, its validation report, and when used its
    # kind and settings; None: a one-stage model
    refine: dict | None = None
    created: str = ""
    weights_sha256: str = ""

    def box_calibration(self) -> BoxCalibration | None:
        return BoxCalibration(**self.calibration) if self.calibration else None


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def trained_detector(net, cfg, sources, strategy: str = "real_only", calibration: BoxCalibration | None = None,
                     detector: str | None = None, refiner: Refiner | None = None,
                     refine_report: RefineReport | None = None) -> Detector:
    """A :class:`Detector` for ``net`` just trained with ``cfg`` (a TrainConfig) on ``sources``,
    with its second stage ``refiner`` where one was fitted (and kept: ``refine_report`` says)."""
    crops = [s.crops for s in sources]
    parts = [{"n": len(c), "share": s.share, "digest": ids_digest(c.ids)} for s, c in zip(sources, crops, strict=True)]
    meta = ModelMeta(scheme=crops[0].scheme.name, num_points=net.num_points, backbone=cfg.backbone, width=cfg.width,
                     size=cfg.size, margin=cfg.margin, flip_test=cfg.flip_test, strategy=strategy, seed=cfg.seed,
                     train_set=TrainSet(n=sum(p["n"] for p in parts), digest=ids_digest([i for c in crops for i in c.ids]),
                                        parts=parts),
                     train=cfg.model_dump(mode="json"), calibration=asdict(calibration) if calibration else None,
                     detector=detector, refine=_refine_meta(refiner, refine_report))
    return Detector(net.eval(), meta, refiner=refiner)


def _refine_meta(refiner: Refiner | None, report: RefineReport | None) -> dict | None:
    if report is None:
        return None
    return report.as_meta() | (refiner.describe() if refiner is not None else {})


def check_scheme(meta: ModelMeta, path: Path, scheme: str | None) -> None:
    if scheme is not None and scheme != meta.scheme:
        raise ModelError(f"{path}: the model predicts scheme {meta.scheme!r}, but the data is {scheme!r}")


class Detector:
    """A LandmarkNet with its metadata, and its second stage (a :class:`Refiner`) if it has one."""

    def __init__(self, net, meta: ModelMeta, path: Path | None = None, refiner: Refiner | None = None):
        self.net, self.meta, self.path, self.refiner = net, meta, path, refiner

    @property
    def name(self) -> str:
        stem = self.path.name if self.path else "unsaved"
        return f"gapkit:{stem}@{self.meta.weights_sha256[:12]}"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model file (:mod:`gapkit.modelfile`), its weights' digest in its meta."""
        arrays = {k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        data = pack_arrays(arrays | (self.refiner.arrays() if self.refiner else {}))
        self.meta.weights_sha256 = weights_digest(data)
        self.meta.created = self.meta.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.path = write_model_file(path, DETECTOR, self.meta, data, overwrite=overwrite)
        return self.path

    @classmethod
    def load(cls, path: str | Path, scheme: str | None = None) -> Detector:
        """Read a model file; ``scheme``, when given, must be the one it predicts."""
        import torch  # deferred: reading a model's metadata (and this module) must not import torch

        from gapkit.train.model import LandmarkNet  # imports torch at the top

        file = read_model_file(path, DETECTOR)
        meta = file.meta_as(ModelMeta)
        check_scheme(meta, file.path, scheme)
        try:
            arrays = file.arrays()
            state = {k: torch.from_numpy(v.copy()) for k, v in arrays.items() if not k.startswith("refine")}
            net = LandmarkNet(meta.num_points, meta.width, meta.backbone)
            net.load_state_dict(state)
            refiner = read_refiner(meta.refine, arrays, get_scheme(meta.scheme)) if two_stage(meta) else None
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{file.path}: the weights do not fit the model it describes ({exc})") from None
        return cls(net.eval(), meta, file.path, refiner)

    def to(self, device: str) -> Detector:
        self.net = self.net.to(resolve_device(device))
        if self.refiner is not None:
            self.refiner.to(resolve_device(device))
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch  # deferred: this module must not import torch (see load)

        dev = next(self.net.parameters()).device
        with torch.inference_mode():
            return self.net(torch.from_numpy(x).to(dev)).float().cpu().numpy()


def two_stage(meta: ModelMeta) -> bool:
    """Whether a model's file holds a second stage that was kept."""
    return bool(meta.refine and meta.refine.get("used"))


class PointModel(Protocol):
    """What runs a model's first stage: its metadata, and (B, 3, S, S) float32 crops in [-1, 1]
    -> (B, K, 2) crop-pixel (x, y). :class:`Detector` and ``gapkit.train.onnx.OnnxDetector``."""

    meta: ModelMeta

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


def to_input(crops: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 BGR crops -> (B, 3, S, S) float32 RGB in [-1, 1]."""
    x = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def crop_points(model: PointModel, crops: np.ndarray, flip: bool | None = None) -> np.ndarray:
    """(B, K, 2) crop-pixel predictions for (B, S, S, 3) uint8 crops; with ``flip`` (default: the
    model's ``flip_test``) averaged with the mirrored crop's, points relabelled left <-> right."""
    x = to_input(crops)
    p = model(x)
    if model.meta.flip_test if flip is None else flip:
        p = merge_flipped(p, model(np.ascontiguousarray(x[..., ::-1])), get_scheme(model.meta.scheme).flip,
                          x.shape[-1])
    return p


def merge_flipped(p: np.ndarray, q: np.ndarray, flip: list[int], width: int) -> np.ndarray:
    """The mean of predictions ``p`` and ``q`` (B, K, 2) made on the mirrored crops (``width``
    pixels wide): ``q`` is mirrored back and its points relabelled left <-> right first."""
    q = q[:, np.array(flip)]
    q[..., 0] = (width - 1) - q[..., 0]
    return (p + q) / 2
