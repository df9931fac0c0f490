"""The label adapter: translate landmarks from one scheme's meaning into another's.

:meth:`LabelAdapter.fit` learns the shape map (:func:`gapkit.adapt.shape_fit.fit_shapes`);
:meth:`LabelAdapter.fit_images` adds a second stage that reads the image around each adapted
point (:mod:`gapkit.refine`); ``predict_images`` runs both stages. Points are 0-based pixel
(x, y); NaN marks a missing point. A source with per-point depth (MediaPipe's z,
``attributes["z"]``) can feed it to the adapter (``source_depth``, (N, K_s) in the source's
pixel scale). An adapter saves to one model file (``.gka``, :mod:`gapkit.modelfile`) holding
``meta.json`` and ``weights.npz``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapkit.adapt.config import FitConfig, FitReport
from gapkit.adapt.mlp import mlp_from_state, mlp_layout, run_mlp
from gapkit.adapt.pairs import check_shapes, record_depth
from gapkit.adapt.shape_fit import ShapeFit, align_source, fit_shapes
from gapkit.align import procrustes
from gapkit.devices import resolve_device
from gapkit.errors import AdapterError, Problem
from gapkit.faceset import FaceSet
from gapkit.modelfile import ADAPTER, ModelFile, pack_arrays, read_model_file, write_model_file
from gapkit.records import FaceRecord
from gapkit.refine import RefineConfig, Refiner, RefineReport, read_refiner
from gapkit.refine import fit as fit_refiner
from gapkit.schemes import get_scheme
from gapkit.version import __version__

FILE_KIND = ADAPTER.kind
FILE_VERSION = ADAPTER.version
PREDICT_CHUNK = 8192
BASE_ARRAYS = ("mean_source", "mean_target", "x_mean", "y_mean", "lin_w", "lin_b")  # weights.npz
META_KEYS = ("source_scheme", "target_scheme", "normaliser", "head")  # what loading cannot do without


@dataclass
class Adapted:
    """Records rewritten by an adapter: the faces, how many a refinement stage refined (None
    without one) and the faces that kept the shape-only answer because their image was unreadable."""

    faces: FaceSet
    refined: int | None
    problems: list[Problem]


class LabelAdapter:
    """Learned translator from ``source`` scheme points to ``target`` scheme points."""

    def __init__(self, source: str, target: str, normaliser: str | None = None):
        self.source = get_scheme(source)
        self.target = get_scheme(target)
        self.normaliser = normaliser or self.target.default_normaliser
        self.mean_source: np.ndarray | None = None  # (K_s, 2), centred, unit RMS radius
        self.mean_target: np.ndarray | None = None  # (K_t, 2) in the same aligned frame
        self.x_mean: np.ndarray | None = None
        self.y_mean: np.ndarray | None = None
        self.lin_w: np.ndarray | None = None  # (2K_s, 2K_t)
        self.lin_b: np.ndarray | None = None  # (2K_t,)
        self.mlp_state: dict[str, np.ndarray] | None = None
        self.hidden: tuple[int, ...] = ()
        self.mlp_inputs = 0
        self.head = "linear"
        self.depth = False  # whether the features include the source's per-point depth
        self.meta: dict = {}
        self.refiner: Refiner | None = None
        self._fit_config: FitConfig | None = None
        self._net = None
        self._device = "cpu"

    # ---- frames -------------------------------------------------------------------
    def _features(self, src: np.ndarray, depth: np.ndarray | None = None):
        """Centred aligned source features (N, 2K_s or 3K_s) and the similarity used."""
        x, tf = align_source(src, self.mean_source, depth if self.depth else None)
        return x - self.x_mean, tf

    def _check_depth(self, depth: np.ndarray | None, n: int) -> np.ndarray | None:
        if not self.depth:
            return None
        if depth is None:
            raise AdapterError("this adapter was fitted with the source's per-point depth "
                               "(attributes z); give it the depth too")
        depth = np.asarray(depth, float)
        if depth.shape != (n, self.source.num_points):
            raise AdapterError(f"source depth has shape {depth.shape}, expected ({n}, {self.source.num_points})")
        return depth

    def _checked_pairs(self, source_points: np.ndarray, target_points: np.ndarray,
                       ids: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
        src = check_shapes(source_points, self.source.num_points, f"source ({self.source.name})", ids)
        tgt = check_shapes(target_points, self.target.num_points, f"target ({self.target.name})", ids)
        return src, tgt

    # ---- fitting -----------------------------------------------------------------
    def fit(self, source_points: np.ndarray, target_points: np.ndarray, config: FitConfig | None = None,
            progress: Callable[[int, int], None] | None = None, ids: list[str] | None = None,
            source_depth: np.ndarray | None = None) -> FitReport:
        """Fit on paired shapes: ``source_points`` (N, K_s, 2) and ``target_points`` (N, K_t, 2)
        of the same faces, in pixels, and optionally the source's depth (N, K_s). NaN target
        points are left out of the loss."""
        cfg = config or FitConfig()
        self._fit_config = cfg
        self.refiner = None
        self.depth = source_depth is not None
        depth = self._check_depth(source_depth, len(source_points))
        src, tgt = self._checked_pairs(source_points, target_points, ids)
        if len(src) != len(tgt):
            raise AdapterError(f"{len(src)} source shapes but {len(tgt)} target shapes")
        n = len(src)
        if n < 5:
            raise AdapterError(f"need at least 5 pairs to fit an adapter, got {n}")
        self._device = resolve_device(cfg.device)
        fit = fit_shapes(src, tgt, depth, self.target, self.normaliser, cfg, self._device, progress)
        self._take(fit)
        rep = fit.report
        val = rep.val_nme_mlp_pct if self.head == "mlp" else rep.val_nme_linear_pct
        self.meta = {
            "kind": FILE_KIND, "file_version": FILE_VERSION, "gapkit_version": __version__,
            "source_scheme": self.source.name, "target_scheme": self.target.name,
            "normaliser": self.normaliser, "head": self.head, "hidden": list(self.hidden),
            "mlp_inputs": self.mlp_inputs, "training_pairs": n, "train": rep.n_train, "val": rep.n_val,
            "val_nme_pct": val, "ridge_alpha": rep.ridge_alpha, "seed": cfg.seed,
            "cv": rep.cv, "fit_device": self._device, "source_depth": self.depth,
            "local_neighbours": cfg.local_neighbours,
        }
        return rep

    def _take(self, fit: ShapeFit) -> None:
        """Hold the weights of a shape fit."""
        f = fit.frame
        self.mean_source, self.mean_target, self.x_mean, self.y_mean = f.mean_source, f.mean_target, f.x_mean, f.y_mean
        self.lin_w, self.lin_b = fit.linear.w, fit.linear.b
        self.head = fit.head
        self.mlp_state, self.hidden, self._net = None, (), None
        if fit.net is not None:
            self._net = fit.net.eval()
            self.hidden, self.mlp_inputs, self.mlp_state = mlp_layout(fit.net)

    def fit_images(self, source_points: np.ndarray, target_points: np.ndarray, images: list[str],
                   config: RefineConfig | None = None, ids: list[str] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   source_depth: np.ndarray | None = None) -> RefineReport:
        """Fit the image refinement stage on the pairs this adapter was fitted on (or others), with
        ``images[i]`` the image of face i. Its initial points are out-of-fold shape-adapter
        predictions (5 folds, the shape fit's settings), so it learns the errors the shape
        adapter makes on unseen faces. Kept only where validation says it helps (see
        :func:`gapkit.refine.fit`); faces whose image cannot be read are left out and reported."""
        if self.lin_w is None:
            raise AdapterError("fit the shape adapter before its image refinement")
        cfg = config or RefineConfig()
        device = resolve_device(cfg.device)
        src, tgt = self._checked_pairs(source_points, target_points, ids)
        n = len(src)
        if len(tgt) != n or len(images) != n:
            raise AdapterError(f"{n} source shapes, {len(tgt)} target shapes and {len(images)} images")
        if n < 10:
            raise AdapterError(f"need at least 10 pairs to fit an image refinement, got {n}")
        depth = self._check_depth(source_depth, n)
        start = time.perf_counter()
        oof = self._out_of_fold(src, tgt, depth, device, cfg.seed + 3)
        self.refiner, rep = fit_refiner(list(images), oof, tgt, self.mean_target, self.target, self.normaliser,
                                        cfg, device, ids, progress)
        rep.fit_s = round(time.perf_counter() - start, 1)
        self.meta["refine"] = dict(rep.as_meta(), config=(self.refiner.cfg if self.refiner else cfg).model_dump(mode="json"),
                                   fit_device=device)
        return rep

    def _out_of_fold(self, src: np.ndarray, tgt: np.ndarray, depth: np.ndarray | None, device: str,
                     seed: int) -> np.ndarray:
        """Shape-adapter predictions (N, K_t, 2) of each face by an adapter fitted without it
        (5 folds, this adapter's shape settings)."""
        shape_cfg = (self._fit_config or FitConfig()).model_copy(update={"device": device})
        n = len(src)
        oof = np.empty(tgt.shape)
        for val in np.array_split(np.random.default_rng(seed).permutation(n), 5):
            rest = np.setdiff1d(np.arange(n), val)
            fold = LabelAdapter(self.source.name, self.target.name, self.normaliser)
            fold.fit(src[rest], tgt[rest], shape_cfg, source_depth=None if depth is None else depth[rest])
            oof[val] = fold.predict(src[val], None if depth is None else depth[val])
        return oof

    # ---- use ---------------------------------------------------------------------
    def predict(self, source_points: np.ndarray, source_depth: np.ndarray | None = None) -> np.ndarray:
        """(N, K_s, 2) or (K_s, 2) source-scheme points -> (N, K_t, 2) target-scheme points. An
        adapter fitted with depth needs ``source_depth`` (N, K_s) or (K_s,); others ignore it."""
        if self.lin_w is None:
            raise AdapterError("this adapter is not fitted")
        src = np.asarray(source_points, float)
        single = src.ndim == 2
        src = check_shapes(src[None] if single else src, self.source.num_points, f"source ({self.source.name})",
                           deep=False)
        if source_depth is not None and single:
            source_depth = np.asarray(source_depth, float)[None]
        depth = self._check_depth(source_depth, len(src))
        out = np.empty((len(src), self.target.num_points, 2))
        # Chunks that stay in cache are several times faster than one pass over millions.
        for i in range(0, len(src), PREDICT_CHUNK):
            x, tf = self._features(src[i:i + PREDICT_CHUNK], None if depth is None else depth[i:i + PREDICT_CHUNK])
            y = x @ self.lin_w + self.lin_b
            if self.mlp_state is not None:
                y = y + run_mlp(self.net, x, self._device)
            out[i:i + PREDICT_CHUNK] = tf.inverse().apply((y + self.y_mean).reshape(len(x), -1, 2))
        return out[0] if single else out

    def predict_images(self, source_points: np.ndarray, images: list[str], ids: list[str] | None = None,
                       progress: Callable[[int], None] | None = None,
                       source_depth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list]:
        """Both stages: (N, K_t, 2) points, which faces were refined (N,) bool, and the problems
        (a face whose image cannot be read keeps its shape-only answer). Without a refinement
        stage this is :meth:`predict`, with no face refined."""
        pred = self.predict(source_points, source_depth)
        if self.refiner is None:
            return pred, np.zeros(len(pred), bool), []
        return self.refiner(list(images), pred, ids, progress=progress)

    def predict_records(self, faces: FaceSet | Sequence[FaceRecord], points: np.ndarray | None = None,
                        progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
        """Both stages on FaceRecords: their points (or ``points`` (N, K_s, 2) in their order),
        their images for a refinement stage and their ``attributes["z"]`` for a depth adapter.
        Returns what :meth:`predict_images` does."""
        faces = faces if isinstance(faces, FaceSet) else FaceSet(list(faces))
        pts = faces.points if points is None else points
        depth = record_depth(faces.records) if self.depth else None  # predict names a missing one
        return self.predict_images(pts, faces.images, faces.ids, progress, depth)

    def adapt(self, faces: FaceSet, name: str = "", progress: Callable[[int], None] | None = None) -> Adapted:
        """``faces`` rewritten into the target scheme (`gapkit adapt apply`): each record keeps its
        id and image, and its attributes say where it came from (``adapted_from``, ``adapter``:
        ``name``, and with a refinement stage ``refined``: whether its image was read)."""
        pred, refined, problems = self.predict_records(faces, progress=progress)
        out = []
        for i, (r, p) in enumerate(zip(faces, pred, strict=True)):
            attrs = dict(r.attributes, adapted_from=r.scheme, adapter=name)
            if self.refiner is not None:
                attrs["refined"] = bool(refined[i])
            out.append(r.model_copy(update={"scheme": self.target.name, "points": p, "visible": None,
                                            "attributes": attrs}))
        return Adapted(FaceSet(out, self.target.name), int(refined.sum()) if self.refiner else None, problems)

    def mean_shape_baseline(self, source_points: np.ndarray) -> np.ndarray:
        """The target mean shape placed by each face's source similarity: the Procrustes baseline."""
        src = check_shapes(np.asarray(source_points, float), self.source.num_points, "source")
        tf = procrustes(src, self.mean_source)
        return tf.inverse().apply(np.broadcast_to(self.mean_target, (len(src),) + self.mean_target.shape))

    @property
    def _n_features(self) -> int:
        return (3 if self.depth else 2) * self.source.num_points

    @property
    def net(self):
        """The MLP head (built from the weights on first use, on the CPU), or None for a linear head."""
        if self._net is None and self.mlp_state is not None:
            self._net = mlp_from_state(self._n_features, 2 * self.target.num_points, self.hidden, self.mlp_inputs,
                                       self.mlp_state)
            self._device = "cpu"
        return self._net

    def to(self, device: str) -> LabelAdapter:
        self._device = resolve_device(device)
        if self.net is not None:
            self._net = self._net.to(self._device)
        if self.refiner is not None:
            self.refiner.to(self._device)
        return self

    # ---- files ---------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """One zip file: meta.json (schemes, mean shapes, sizes, val NME, version) + weights.npz."""
        if self.lin_w is None:
            raise AdapterError("this adapter is not fitted")
        arrays = {k: getattr(self, k) for k in BASE_ARRAYS}
        for k, v in (self.mlp_state or {}).items():
            arrays[f"mlp.{k}"] = v
        if self.refiner is not None:
            arrays |= self.refiner.arrays()
        meta = dict(self.meta, hidden=list(self.hidden), mlp_inputs=self.mlp_inputs, head=self.head,
                    mean_source=self.mean_source.tolist(), mean_target=self.mean_target.tolist())
        write_model_file(path, ADAPTER, meta, pack_arrays(arrays), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, source: str | None = None, target: str | None = None) -> LabelAdapter:
        """Read a ``.gka`` file; ``source`` / ``target``, when given, must match its schemes."""
        file = read_model_file(path, ADAPTER)
        p, meta = file.path, file.meta
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise AdapterError(f"{p}: not a readable gapkit adapter file (meta.json lacks {', '.join(missing)})")
        try:
            arrays = file.arrays()
        except ValueError as exc:
            raise AdapterError(f"{p}: not a readable gapkit adapter file ({exc})") from None
        for want, key in ((source, "source_scheme"), (target, "target_scheme")):
            if want is not None and want != meta[key]:
                raise AdapterError(f"{p}: adapter expects {key.split('_')[0]} scheme {meta[key]!r}, "
                                   f"but the data is {want!r}")
        self = cls(meta["source_scheme"], meta["target_scheme"], meta["normaliser"])
        self._read_shape_stage(file, arrays)
        self.refiner = _read_refiner(file, arrays, self.target)
        return self

    def _read_shape_stage(self, file: ModelFile, arrays: dict[str, np.ndarray]) -> None:
        meta = file.meta
        missing = [k for k in BASE_ARRAYS if k not in arrays]
        if missing:
            raise AdapterError(f"{file.path}: not a readable gapkit adapter file (no {', '.join(missing)})")
        for k in BASE_ARRAYS:
            setattr(self, k, arrays[k])
        mlp = {k[4:]: v for k, v in arrays.items() if k.startswith("mlp.")}
        self.mlp_state = mlp or None
        self.hidden = tuple(meta.get("hidden", ()))
        self.mlp_inputs = int(meta.get("mlp_inputs", 0))
        self.head = meta["head"]
        self.depth = bool(meta.get("source_depth", False))
        self.meta = {k: v for k, v in meta.items() if k not in ("mean_source", "mean_target")}
        if self.lin_w.shape != (self._n_features, 2 * self.target.num_points):
            raise AdapterError(f"{file.path}: weights do not fit schemes {self.source.name} -> {self.target.name}")


def _read_refiner(file: ModelFile, arrays: dict[str, np.ndarray], target) -> Refiner | None:
    """The image refinement stage of an adapter file, checked (a bad file fails at load, not at
    first use), or None when it has none."""
    info = file.meta.get("refine")
    if not (info and info.get("used")):
        return None
    try:
        return read_refiner(info, arrays, target)
    except ValueError as exc:
        raise AdapterError(f"{file.path}: {exc}") from None
