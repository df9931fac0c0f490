"""A model outside torch: export to ONNX, and run an export with onnxruntime.

Stage 1 is one graph, ``NAME.onnx``: input ``image`` (B, 3, S, S) RGB in [-1, 1], output
``points`` (B, K, 2) crop-pixel (x, y); the model's metadata travels in it. A two-stage model's
refiner is a second graph beside it, ``NAME.refine.onnx``: inputs ``crops`` (B, 3, R, R) RGB in
[-1, 1] cut in the refiner's frame and ``init`` (B, K, 2) frame pixels, output the refined
``points``. The warp between them (stage 1's points -> the frame) is OpenCV, in
:class:`gapkit.refine.Refiner`, the same code the torch model runs.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np

from gapkit.errors import InputError, ModelError
from gapkit.files import atomic_open, check_output
from gapkit.refine import RefineConfig, Refiner
from gapkit.refine.cnn import CnnRefiner, flip_averaged
from gapkit.schemes import get_scheme
from gapkit.train.detector import Detector, ModelMeta, check_scheme, to_input, two_stage

REFINE_KEY = "gapkit-refiner"  # the second graph's metadata: the frame, the kind and its settings


def refine_graph(path: str | Path) -> Path:
    """Where a two-stage export's second graph lies: ``NAME.onnx`` -> ``NAME.refine.onnx``."""
    p = Path(path)
    return p.with_name(p.stem + ".refine.onnx")


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort  # deferred: an optional extra (gapkit[onnx])
    except ImportError:
        raise ModelError("running an .onnx model needs onnxruntime (pip install 'gapkit[onnx]')") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxCnnRefiner(CnnRefiner):
    """The CNN refiner's exported graph run by onnxruntime (same crops, flip averaging)."""

    def __init__(self, cfg: RefineConfig, scheme, session):
        super().__init__(cfg, scheme, {})
        self.session = session

    def check(self) -> None:
        """The graph was checked when onnxruntime loaded it."""

    def to(self, device: str) -> OnnxCnnRefiner:
        return self  # onnxruntime runs on the CPU here

    def _run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"crops": to_input(crops), "init": pts.astype(np.float32)})[0]

    def run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return flip_averaged(self._run, crops, pts, self.test_flip())


class OnnxDetector:
    """An exported model run by onnxruntime on CPU; its metadata travels in the ONNX file, and
    a two-stage model's second graph is read from beside it (:func:`refine_graph`)."""

    def __init__(self, path: str | Path, scheme: str | None = None, threads: int | None = None):
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such model file")
        try:
            self.session = _session(p, threads)
            raw = self.session.get_modelmeta().custom_metadata_map.get("gapkit")
            self.meta = ModelMeta(**json.loads(raw or "null") or {})
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{p}: not a gapkit ONNX model ({str(exc).splitlines()[0][:200]})") from None
        check_scheme(self.meta, p, scheme)
        self.path = p
        self.input = self.session.get_inputs()[0].name
        self.refiner = self._refiner(threads) if two_stage(self.meta) else None

    def _refiner(self, threads: int | None) -> Refiner:
        g = refine_graph(self.path)
        if not g.is_file():
            raise ModelError(f"{self.path}: a two-stage model, but its second graph {g.name} is not beside it")
        try:
            session = _session(g, threads)
            info = json.loads(session.get_modelmeta().custom_metadata_map[REFINE_KEY])
            cfg, scheme = RefineConfig(**info["config"]), get_scheme(self.meta.scheme)
            ref = np.asarray(info["ref"], float)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{g}: not the second graph of a gapkit model ({str(exc).splitlines()[0][:200]})") from None
        return Refiner(cfg, ref, scheme, {}, "cnn", model=OnnxCnnRefiner(cfg, scheme, session))

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


def _graph_bytes(module, inputs: tuple, names: list[str], output: str, opset: int) -> bytes:
    """``module`` (eval mode) traced to ONNX with a dynamic batch axis on every input and the output."""
    import torch  # deferred: this module must not import torch until it exports

    buf = io.BytesIO()
    axes = {n: {0: "batch"} for n in [*names, output]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        # the wrapper in eval mode: the exporter restores the module's mode afterwards, recursively
        torch.onnx.export(module.eval(), inputs, buf, input_names=names, output_names=[output],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return buf.getvalue()


def _write_graph(data: bytes, out: Path, key: str, value: str, doc: str, overwrite: bool) -> None:
    import onnx  # deferred: an optional extra (checked by export_onnx)

    proto = onnx.load_from_string(data)
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
    proto.doc_string = doc
    with atomic_open(out, "wb", overwrite=overwrite) as f:
        f.write(proto.SerializeToString())


def export_onnx(model: Detector, out: str | Path, overwrite: bool = False, opset: int = 17) -> Path:
    """Write ``model`` as ONNX (dynamic batch; output crop-pixel points) with its metadata; a
    two-stage model's refiner goes to a second graph beside it (:func:`refine_graph`)."""
    import torch  # deferred: this module must not import torch until it exports

    try:
        import onnx  # noqa: F401  deferred: an optional extra (gapkit[onnx]); checked before any work
    except ImportError:
        raise ModelError("export needs onnx (pip install 'gapkit[onnx]')") from None
    out = Path(out)
    refiner = model.refiner
    if refiner is not None and refiner.net is None:
        raise ModelError(f"{model.name}: its second stage is the descriptor cascade ({refiner.method}), which has "
                         "no ONNX graph; predict with the .gkm, or train with the refiner method cnn")
    for p in [out] + ([refine_graph(out)] if refiner is not None else []):
        check_output(p, overwrite)

    class Points(torch.nn.Module):  # the points only: decode's other outputs are for training
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.decode(x)[0]

    meta = model.meta
    x = torch.zeros(1, 3, meta.size, meta.size)
    data = _graph_bytes(Points(model.net.cpu().eval()), (x,), ["image"], "points", opset)
    _write_graph(data, out, "gapkit", meta.model_dump_json(),
                 f"gapkit landmark detector, scheme {meta.scheme}: input 'image' (B, 3, {meta.size}, {meta.size}) "
                 f"RGB in [-1, 1]; output 'points' (B, {meta.num_points}, 2) crop-pixel (x, y)", overwrite)
    if refiner is not None:
        _export_refiner(refiner, refine_graph(out), overwrite, opset)
    return out


def _export_refiner(refiner: Refiner, out: Path, overwrite: bool, opset: int) -> None:
    import torch  # deferred: this module must not import torch until it exports

    class Last(torch.nn.Module):  # the last cascade step's points
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, crops, points):
            return self.net(crops, points)[-1]

    size, k = refiner.cfg.size, refiner.scheme.num_points
    inputs = (torch.zeros(1, 3, size, size), torch.full((1, k, 2), size / 2.0))
    data = _graph_bytes(Last(refiner.net.cpu().float().eval()), inputs, ["crops", "init"], "points", opset)
    info = json.dumps(refiner.describe() | {"ref": refiner.ref.tolist()})
    _write_graph(data, out, REFINE_KEY, info,
                 f"gapkit refinement stage: inputs 'crops' (B, 3, {size}, {size}) RGB in [-1, 1] in the refiner's "
                 f"frame, 'init' (B, {k}, 2) frame pixels; output refined 'points'", overwrite)
