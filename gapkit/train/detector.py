"""A trained detector as users hold it: one file (``.gkm``), a zip of ``meta.json`` (scheme,
input size, crop margin and policy, box calibration, training set digest, strategy, seed,
gapkit version) and ``weights.npz``. Loading reads plain arrays (``allow_pickle=False``),
never a pickle, and checks the file's kind, version, weight digest and shapes.

:class:`Detector` runs the torch weights; :class:`OnnxDetector` runs an exported ``.onnx``
with onnxruntime. Both take (B, 3, S, S) float32 crops in [-1, 1] and give (B, K, 2) crop-pixel
(x, y), so :func:`crop_points` (flip averaging) serves either.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from gapkit.detect import BoxCalibration
from gapkit.devices import resolve_device
from gapkit.errors import InputError, ModelError
from gapkit.files import atomic_open
from gapkit.modelfile import DETECTOR, pack_arrays, read_model_file, weights_digest, write_model_file
from gapkit.schemes import get_scheme
from gapkit.version import __version__

FILE_KIND = "gapkit-detector"
FILE_VERSION = 1
# How a crop is cut (gapkit.crop): the face's bbox, else its landmark box, squared to margin x its
# larger side, centred, resized to size x size. A model only works on crops cut the same way.
CROP_POLICY = "gapkit.crop/square-margin-v1"


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
    created: str = ""
    weights_sha256: str = ""

    def box_calibration(self) -> BoxCalibration | None:
        return BoxCalibration(**self.calibration) if self.calibration else None


def ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def trained_detector(net, cfg, sources, strategy: str = "real_only", calibration: BoxCalibration | None = None,
                     detector: str | None = None) -> Detector:
    """A :class:`Detector` for ``net`` just trained with ``cfg`` (a TrainConfig) on ``sources``."""
    crops = [s.crops for s in sources]
    parts = [{"n": len(c), "share": s.share, "digest": ids_digest(c.ids)} for s, c in zip(sources, crops, strict=True)]
    meta = ModelMeta(scheme=crops[0].scheme.name, num_points=net.num_points, backbone=cfg.backbone, width=cfg.width,
                     size=cfg.size, margin=cfg.margin, flip_test=cfg.flip_test, strategy=strategy, seed=cfg.seed,
                     train_set=TrainSet(n=sum(p["n"] for p in parts), digest=ids_digest([i for c in crops for i in c.ids]),
                                        parts=parts),
                     train=cfg.model_dump(mode="json"), calibration=asdict(calibration) if calibration else None,
                     detector=detector)
    return Detector(net.eval(), meta)


def _check_scheme(meta: ModelMeta, path: Path, scheme: str | None) -> None:
    if scheme is not None and scheme != meta.scheme:
        raise ModelError(f"{path}: the model predicts scheme {meta.scheme!r}, but the data is {scheme!r}")


class Detector:
    """A LandmarkNet with its metadata."""

    def __init__(self, net, meta: ModelMeta, path: Path | None = None):
        self.net, self.meta, self.path = net, meta, path

    @property
    def name(self) -> str:
        stem = self.path.name if self.path else "unsaved"
        return f"gapkit:{stem}@{self.meta.weights_sha256[:12]}"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model file (:mod:`gapkit.modelfile`), its weights' digest in its meta."""
        data = pack_arrays({k: v.detach().cpu().numpy() for k, v in self.net.state_dict().items()})
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
        _check_scheme(meta, file.path, scheme)
        try:
            state = {k: torch.from_numpy(v.copy()) for k, v in file.arrays().items()}
            net = LandmarkNet(meta.num_points, meta.width, meta.backbone)
            net.load_state_dict(state)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ModelError(f"{file.path}: the weights do not fit the model it describes ({exc})") from None
        return cls(net.eval(), meta, file.path)

    def to(self, device: str) -> Detector:
        self.net = self.net.to(resolve_device(device))
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch  # deferred: this module must not import torch (see load)

        dev = next(self.net.parameters()).device
        with torch.inference_mode():
            return self.net(torch.from_numpy(x).to(dev)).float().cpu().numpy()


class OnnxDetector:
    """An exported model run by onnxruntime on CPU; its metadata travels in the ONNX file."""

    def __init__(self, path: str | Path, scheme: str | None = None, threads: int | None = None):
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such model file")
        try:
            import onnxruntime as ort  # deferred: an optional extra (gapkit[onnx])
        except ImportError:
            raise ModelError("running an .onnx model needs onnxruntime (pip install 'gapkit[onnx]')") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
            raw = self.session.get_modelmeta().custom_metadata_map.get("gapkit")
            self.meta = ModelMeta(**json.loads(raw or "null") or {})
        except Exception as exc:
            raise ModelError(f"{p}: not a gapkit ONNX model ({str(exc).splitlines()[0][:200]})") from None
        _check_scheme(self.meta, p, scheme)
        self.path = p
        self.input = self.session.get_inputs()[0].name

    @property
    def name(self) -> str:
        return f"gapkit-onnx:{self.path.name}@{self.meta.weights_sha256[:12]}"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x, np.float32)})[0]


def load_model(path: str | Path, scheme: str | None = None, device: str = "cpu") -> Detector | OnnxDetector:
    """A model file of either kind: ``.onnx`` runs on onnxruntime, anything else is a ``.gkm``."""
    p = Path(path)
    if p.suffix.lower() == ".onnx":
        return OnnxDetector(p, scheme)
    return Detector.load(p, scheme).to(device)


def to_input(crops: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 BGR crops -> (B, 3, S, S) float32 RGB in [-1, 1]."""
    x = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32)
    return x / np.float32(127.5) - np.float32(1.0)


def crop_points(model: Detector | OnnxDetector, crops: np.ndarray, flip: bool | None = None) -> np.ndarray:
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


def export_onnx(model: Detector, out: str | Path, overwrite: bool = False, opset: int = 17) -> Path:
    """Write ``model`` as ONNX (dynamic batch; output crop-pixel points) with its metadata."""
    import torch  # deferred: this module must not import torch (see Detector.load)

    try:
        import onnx  # deferred: an optional extra (gapkit[onnx])
    except ImportError:
        raise ModelError("export needs onnx (pip install 'gapkit[onnx]')") from None

    class Points(torch.nn.Module):  # the points only: decode's other outputs are for training
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.decode(x)[0]

    net = model.net.cpu().eval()
    x = torch.zeros(1, 3, model.meta.size, model.meta.size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # the wrapper in eval mode: the exporter restores the module's mode afterwards, recursively
        torch.onnx.export(Points(net).eval(), (x,), buf, input_names=["image"], output_names=["points"],
                          dynamic_axes={"image": {0: "batch"}, "points": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = "gapkit", model.meta.model_dump_json()
    proto.doc_string = (f"gapkit landmark detector, scheme {model.meta.scheme}: input 'image' (B, 3, "
                        f"{model.meta.size}, {model.meta.size}) RGB in [-1, 1]; output 'points' (B, "
                        f"{model.meta.num_points}, 2) crop-pixel (x, y)")
    with atomic_open(out, "wb", overwrite=overwrite) as f:
        f.write(proto.SerializeToString())
    return Path(out)
