"""Label adaptation: translate landmarks from one scheme's meaning into another's.

Pipeline, per face: align the source shape (N, K_s, 2) to the source mean shape with a
similarity (Procrustes) -> predict the target shape (N, K_t, 2) in that aligned frame with a
linear map plus an optional MLP residual -> undo the similarity. Points are 0-based pixel
(x, y); NaN marks a missing point.

The linear map is a local prior plus a ridge residual. The prior puts each target point at
a weighted mean of its nearest source points (weights summing to one, fitted on the pairs);
ridge then fits what that misses, in closed form. A ridge alone shrinks towards the mean
shape, which throws the face's own expression away when pairs are few; shrinking towards
"follow the nearby source points" keeps it.

With few pairs the MLP overfits, so ``head="auto"`` picks between the linear head and the
MLP by validation error (k-fold cross-validation when the training set is small). Training
is seeded and deterministic on CPU. An adapter saves to one zip file (``.gka``) holding
``meta.json`` and ``weights.npz``.

A source with per-point depth (MediaPipe's z, ``attributes["z"]``) can feed it to the adapter
(``source_depth``, (N, K_s) in the source's pixel scale): centred per face and scaled with
the similarity, it joins the aligned (x, y) as a third coordinate.

``fit_images`` adds a second stage that reads the image around each adapted point
(:mod:`gapkit.refine`); ``predict_images`` runs both stages.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import field_validator

from gapkit import __version__
from gapkit.align import generalised_procrustes, procrustes
from gapkit.devices import resolve_device
from gapkit.errors import AdapterError, InputError
from gapkit.files import atomic_open
from gapkit.refine import RefineConfig, Refiner, RefineReport
from gapkit.schemes import get_scheme
from gapkit.settings import Settings

FILE_KIND = "gapkit-label-adapter"
FILE_VERSION = 1
PREDICT_CHUNK = 8192
LOCAL_RIDGE = 1e-4  # shrinks each target point's weights towards its nearest source point
SMALL_DATA = 200  # below this many pairs the head is chosen by k-fold CV, not one split


class FitConfig(Settings):
    head: str = "auto"  # auto | linear | mlp
    hidden: tuple[int, ...] = (256,)
    epochs: int = 300
    max_steps: int = 2500  # optimiser steps in all; caps the epochs on large data
    batch_size: int = 512
    lr: float = 1e-2
    weight_decay: float = 1e-4
    patience: int = 25
    val_frac: float = 0.1
    folds: int = 5
    local_neighbours: int = 8  # source points in each target point's local prior; 0: plain ridge
    seed: int = 0
    device: str = "auto"
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 2, 17))

    @field_validator("head")
    @classmethod
    def _known_head(cls, v: str) -> str:
        if v not in ("auto", "linear", "mlp"):
            raise ValueError(f"unknown head {v!r}; use auto, linear or mlp")
        return v


@dataclass
class FitReport:
    n_pairs: int
    n_train: int
    n_val: int
    head: str
    ridge_alpha: float
    epochs_run: int = 0
    val_nme_linear_pct: float | None = None
    val_nme_mlp_pct: float | None = None
    cv: dict = field(default_factory=dict)


def check_shapes(points: np.ndarray, k: int, what: str, ids: list[str] | None = None,
                 deep: bool = True) -> np.ndarray:
    """(N, k, 2) float array, or an error naming the first bad face. ``deep=False`` leaves the
    degenerate-shape test to the Procrustes fit (it is the costly part at millions of shapes)."""
    arr = np.asarray(points, float)
    if arr.ndim != 3 or arr.shape[1:] != (k, 2):
        raise AdapterError(f"{what}: expected shapes (N, {k}, 2), got {arr.shape}")
    if not len(arr):
        raise AdapterError(f"{what}: no shapes")
    if np.isinf(arr).any():
        raise AdapterError(f"{what}: infinite coordinates")
    has_nan = np.isnan(arr).any()
    if has_nan:
        for i in np.flatnonzero((~np.isnan(arr).any(-1)).sum(1) < 3):
            name = ids[i] if ids else f"#{i}"
            raise AdapterError(f"{what} {name}: fewer than 3 present points (NaN shape)")
    if not deep:
        return arr
    lo, hi = (np.nanmin(arr, axis=1), np.nanmax(arr, axis=1)) if has_nan else (arr.min(axis=1), arr.max(axis=1))
    spread = hi - lo
    for i in np.flatnonzero(np.hypot(spread[:, 0], spread[:, 1]) < 1e-6):
        name = ids[i] if ids else f"#{i}"
        raise AdapterError(f"{what} {name}: degenerate shape (all points coincide)")
    return arr


def _mlp(d_in: int, d_out: int, hidden: tuple[int, ...], n_inputs: int):
    """Frozen input projection (d_in -> n_inputs) -> trainable MLP -> frozen output scale."""
    import torch
    from torch import nn

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(()))

        def forward(self, x):
            return x * self.scale

    project = nn.Linear(d_in, n_inputs, bias=False)
    project.weight.requires_grad_(False)
    layers: list[nn.Module] = [project]
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    last = nn.Linear(width, d_out)
    # Zero output layer: training starts exactly at the linear head, so early stopping
    # can only keep an MLP that beats it on validation.
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers += [last, Scale()]
    return nn.Sequential(*layers).to(torch.float32)


def _input_projection(x: np.ndarray, max_components: int = 128, keep: float = 0.999) -> np.ndarray:
    """(d_in, n) projection of centred features onto their main principal directions, scaled
    so that the first has unit variance. Aligned shapes vary by a few percent of their size;
    O(1) inputs train far faster. The relative scale of the directions is kept: whitening
    each to unit variance would blow the noise directions up to the size of real modes."""
    _, sv, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    var = sv ** 2 / max(len(x) - 1, 1)
    n = int(np.searchsorted(np.cumsum(var) / var.sum(), keep) + 1)
    n = max(1, min(n, max_components, int((var > 1e-12 * var[0]).sum())))
    return (vt[:n].T / np.sqrt(var[0])).astype(np.float32)


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
    def _aligned(self, src: np.ndarray, depth: np.ndarray | None = None):
        """Source shapes moved onto the source mean shape, missing points filled from it
        (N, 2K_s), then with ``self.depth`` the depth (N, K_s) centred per face and scaled by
        the same similarity (N, 3K_s); and the similarity used."""
        tf = procrustes(src, self.mean_source)
        aligned = tf.apply(src)
        if np.isnan(aligned).any():
            aligned = np.where(np.isnan(aligned), self.mean_source[None], aligned)
        x = aligned.reshape(len(src), -1)
        if self.depth:
            z = depth - np.nanmean(depth, axis=1, keepdims=True)
            x = np.concatenate([x, np.nan_to_num(z * tf.scale[:, None])], axis=1)
        return x, tf

    def _features(self, src: np.ndarray, depth: np.ndarray | None = None):
        """Centred aligned source features (N, 2K_s or 3K_s) and the similarity used."""
        x, tf = self._aligned(src, depth)
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

    def _linear(self, x: np.ndarray) -> np.ndarray:
        return x @ self.lin_w + self.lin_b

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
        src = check_shapes(source_points, self.source.num_points, f"source ({self.source.name})", ids)
        tgt = check_shapes(target_points, self.target.num_points, f"target ({self.target.name})", ids)
        if len(src) != len(tgt):
            raise AdapterError(f"{len(src)} source shapes but {len(tgt)} target shapes")
        n = len(src)
        if n < 5:
            raise AdapterError(f"need at least 5 pairs to fit an adapter, got {n}")
        self._device = resolve_device(cfg.device)

        self.mean_source, _ = generalised_procrustes(src)
        x_all, tf = self._aligned(src, depth)
        a_tgt = tf.apply(tgt)
        self.mean_target = np.nanmean(a_tgt, axis=0)
        y_all = a_tgt.reshape(n, -1)
        self.x_mean = x_all.mean(axis=0)
        self.y_mean = np.nanmean(y_all, axis=0)
        x_all = x_all - self.x_mean
        y_all = y_all - self.y_mean

        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(n)
        n_val = max(1, int(round(cfg.val_frac * n))) if cfg.val_frac > 0 else 0
        val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
        rep = FitReport(n_pairs=n, n_train=len(train_idx), n_val=n_val, head=cfg.head, ridge_alpha=0.0)

        head = cfg.head
        if head == "auto" and n < SMALL_DATA:
            rep.cv = self._cross_validate(x_all, y_all, tgt, tf, cfg)
            head = "mlp" if rep.cv["mlp_nme_pct"] < rep.cv["linear_nme_pct"] else "linear"

        self.lin_w, self.lin_b, rep.ridge_alpha = self._fit_linear(x_all[train_idx], y_all[train_idx], cfg)
        self.mlp_state, self.hidden = None, ()
        if n_val:
            rep.val_nme_linear_pct = self._val_nme(x_all[val_idx], tgt[val_idx], tf, val_idx, None)
        if head in ("mlp", "auto"):
            net, rep.epochs_run = _train_mlp(x_all, y_all, train_idx, val_idx, self._linear, cfg, progress,
                                             self._device)
            if n_val:
                rep.val_nme_mlp_pct = self._val_nme(x_all[val_idx], tgt[val_idx], tf, val_idx, net)
            if head == "auto":
                better = n_val and rep.val_nme_mlp_pct < rep.val_nme_linear_pct
                head = "mlp" if better else "linear"
            if head == "mlp":
                self._set_net(net)
        if head == "linear" and n_val:
            # Nothing to stop early: refit the closed form on every pair.
            self.lin_w, self.lin_b, rep.ridge_alpha = self._fit_linear(x_all, y_all, cfg)
        self.head = rep.head = head
        val = rep.val_nme_mlp_pct if head == "mlp" else rep.val_nme_linear_pct
        self.meta = {
            "kind": FILE_KIND, "file_version": FILE_VERSION, "gapkit_version": __version__,
            "source_scheme": self.source.name, "target_scheme": self.target.name,
            "normaliser": self.normaliser, "head": head, "hidden": list(self.hidden), "mlp_inputs": self.mlp_inputs,
            "training_pairs": n, "train": rep.n_train, "val": rep.n_val,
            "val_nme_pct": val, "ridge_alpha": rep.ridge_alpha, "seed": cfg.seed,
            "cv": rep.cv, "fit_device": self._device, "source_depth": self.depth,
            "local_neighbours": cfg.local_neighbours,
        }
        return rep

    def _fit_linear(self, x: np.ndarray, y: np.ndarray, cfg: FitConfig) -> tuple[np.ndarray, np.ndarray, float]:
        """The linear head on centred features and targets: local prior + ridge residual, folded
        into one (weights, bias) for the centred frame, and the ridge's alpha."""
        k = min(cfg.local_neighbours, self.source.num_points)
        if k < 1:
            return _ridge(x, y, cfg.ridge_alphas)
        k2 = 2 * self.source.num_points
        local = _local_weights((x + self.x_mean)[:, :k2], y + self.y_mean, self.mean_source, self.mean_target, k)
        prior = np.zeros((x.shape[1], y.shape[1]))  # depth rows stay zero
        prior[:k2] = np.kron(local.T, np.eye(2))  # x from x, y from y: the prior is rotation-equivariant
        w, b, alpha = _ridge(x, y - (x + self.x_mean) @ prior + self.y_mean, cfg.ridge_alphas)
        return prior + w, b + self.x_mean @ prior - self.y_mean, alpha

    def _set_net(self, net) -> None:
        import torch

        self._net = net.eval()
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        self.hidden = tuple(m.out_features for m in linears[1:-1])
        self.mlp_inputs = linears[0].out_features
        self.mlp_state = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}

    def _val_nme(self, x: np.ndarray, tgt: np.ndarray, tf, idx: np.ndarray, net) -> float:
        from gapkit.metrics import nme

        y = self._linear(x)
        if net is not None:
            y = y + _run_net(net, x, self._device)
        pred = tf[idx].inverse().apply((y + self.y_mean).reshape(len(x), -1, 2))
        return float(100 * nme(pred, tgt, self.target, self.normaliser).mean())

    def _cross_validate(self, x: np.ndarray, y: np.ndarray, tgt: np.ndarray, tf, cfg: FitConfig) -> dict:
        """k-fold NME of the linear and MLP heads: the capacity choice for small data."""
        n = len(x)
        folds = np.array_split(np.random.default_rng(cfg.seed + 1).permutation(n), min(cfg.folds, n))
        errs: dict[str, list[float]] = {"linear": [], "mlp": []}
        for f, val_idx in enumerate(folds):
            val_idx = np.sort(val_idx)
            train_idx = np.setdiff1d(np.arange(n), val_idx)
            self.lin_w, self.lin_b, _ = self._fit_linear(x[train_idx], y[train_idx], cfg)
            errs["linear"].append(self._val_nme(x[val_idx], tgt[val_idx], tf, val_idx, None))
            # Inner split of the training fold for early stopping, never the held-out fold.
            inner = np.random.default_rng(cfg.seed + 2 + f).permutation(train_idx)
            n_in = max(1, int(round(cfg.val_frac * len(inner))))
            net, _ = _train_mlp(x, y, np.sort(inner[n_in:]), np.sort(inner[:n_in]), self._linear, cfg, None,
                                self._device)
            errs["mlp"].append(self._val_nme(x[val_idx], tgt[val_idx], tf, val_idx, net))
        return {"folds": len(folds), "linear_nme_pct": float(np.mean(errs["linear"])),
                "mlp_nme_pct": float(np.mean(errs["mlp"]))}

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
            y = self._linear(x)
            if self.mlp_state is not None:
                y = y + _run_net(self.net, x, self._device)
            out[i:i + PREDICT_CHUNK] = tf.inverse().apply((y + self.y_mean).reshape(len(x), -1, 2))
        return out[0] if single else out

    def fit_images(self, source_points: np.ndarray, target_points: np.ndarray, images: list[str],
                   config: RefineConfig | None = None, ids: list[str] | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   source_depth: np.ndarray | None = None) -> RefineReport:
        """Fit the image refinement stage on the pairs this adapter was fitted on (or others), with
        ``images[i]`` the image of face i. Its initial points are out-of-fold shape-adapter
        predictions (5 folds, the shape fit's settings), so it learns the errors the shape
        adapter makes on unseen faces. Kept only where validation says it helps (see
        :func:`gapkit.refine.fit`); faces whose image cannot be read are left out and reported."""
        from gapkit import refine

        if self.lin_w is None:
            raise AdapterError("fit the shape adapter before its image refinement")
        cfg = config or RefineConfig()
        device = resolve_device(cfg.device)
        src = check_shapes(source_points, self.source.num_points, f"source ({self.source.name})", ids)
        tgt = check_shapes(target_points, self.target.num_points, f"target ({self.target.name})", ids)
        n = len(src)
        if len(tgt) != n or len(images) != n:
            raise AdapterError(f"{n} source shapes, {len(tgt)} target shapes and {len(images)} images")
        if n < 10:
            raise AdapterError(f"need at least 10 pairs to fit an image refinement, got {n}")
        depth = self._check_depth(source_depth, n)
        start = time.perf_counter()
        shape_cfg = (self._fit_config or FitConfig()).model_copy(update={"device": device})
        oof = np.empty(tgt.shape)
        for val in np.array_split(np.random.default_rng(cfg.seed + 3).permutation(n), 5):
            rest = np.setdiff1d(np.arange(n), val)
            fold = LabelAdapter(self.source.name, self.target.name, self.normaliser)
            fold.fit(src[rest], tgt[rest], shape_cfg, source_depth=None if depth is None else depth[rest])
            oof[val] = fold.predict(src[val], None if depth is None else depth[val])
        self.refiner, rep = refine.fit(list(images), oof, tgt, self.mean_target, self.target, self.normaliser, cfg,
                                       device, ids, progress)
        rep.fit_s = round(time.perf_counter() - start, 1)
        self.meta["refine"] = dict({k: v for k, v in rep.__dict__.items() if k != "problems"},
                                   config=(self.refiner.cfg if self.refiner else cfg).model_dump(mode="json"),
                                   fit_device=device, unreadable=len(rep.problems))
        return rep

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

    def predict_records(self, records: list, points: np.ndarray | None = None,
                        progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list]:
        """Both stages on FaceRecords: their points (or ``points`` (N, K_s, 2) in their order),
        their images for a refinement stage and their ``attributes["z"]`` for a depth adapter.
        Returns what :meth:`predict_images` does."""
        pts = np.stack([r.points for r in records]) if points is None else points
        depth = record_depth(records) if self.depth else None  # predict names a missing one
        return self.predict_images(pts, [r.image for r in records], [r.id for r in records], progress, depth)

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
        if self._net is None and self.mlp_state is not None:
            import torch

            net = _mlp(self._n_features, 2 * self.target.num_points, self.hidden, self.mlp_inputs)
            net.load_state_dict({k: torch.from_numpy(v) for k, v in self.mlp_state.items()})
            self._net = net.eval()
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
        arrays = {"mean_source": self.mean_source, "mean_target": self.mean_target, "x_mean": self.x_mean,
                  "y_mean": self.y_mean, "lin_w": self.lin_w, "lin_b": self.lin_b}
        for k, v in (self.mlp_state or {}).items():
            arrays[f"mlp.{k}"] = v
        if self.refiner is not None:
            arrays["refine_ref"] = self.refiner.ref
            for k, v in self.refiner.state.items():
                arrays[f"refine.{k}"] = v
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        meta = dict(self.meta, hidden=list(self.hidden), mlp_inputs=self.mlp_inputs, head=self.head,
                    mean_source=self.mean_source.tolist(), mean_target=self.mean_target.tolist())
        with atomic_open(path, "wb", overwrite=overwrite) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("meta.json", json.dumps(meta, indent=1))
            z.writestr("weights.npz", buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, source: str | None = None, target: str | None = None) -> LabelAdapter:
        """Read a ``.gka`` file; ``source`` / ``target``, when given, must match its schemes."""
        p = Path(path)
        try:
            with zipfile.ZipFile(p) as z:
                meta = json.loads(z.read("meta.json"))
                arrays = dict(np.load(io.BytesIO(z.read("weights.npz")), allow_pickle=False))
        except FileNotFoundError:
            raise InputError(f"{p}: no such adapter file") from None
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise AdapterError(f"{p}: not a gapkit adapter file ({exc})") from None
        if meta.get("kind") != FILE_KIND or meta.get("file_version") != FILE_VERSION:
            raise AdapterError(f"{p}: not a gapkit adapter file of version {FILE_VERSION}")
        for want, key in ((source, "source_scheme"), (target, "target_scheme")):
            if want is not None and want != meta[key]:
                raise AdapterError(f"{p}: adapter expects {key.split('_')[0]} scheme {meta[key]!r}, "
                                   f"but the data is {want!r}")
        self = cls(meta["source_scheme"], meta["target_scheme"], meta["normaliser"])
        for k in ("mean_source", "mean_target", "x_mean", "y_mean", "lin_w", "lin_b"):
            setattr(self, k, arrays[k])
        mlp = {k[4:]: v for k, v in arrays.items() if k.startswith("mlp.")}
        self.mlp_state = mlp or None
        self.hidden = tuple(meta.get("hidden", ()))
        self.mlp_inputs = int(meta.get("mlp_inputs", 0))
        self.head = meta["head"]
        self.depth = bool(meta.get("source_depth", False))
        self.meta = {k: v for k, v in meta.items() if k not in ("mean_source", "mean_target")}
        if self.lin_w.shape != (self._n_features, 2 * self.target.num_points):
            raise AdapterError(f"{p}: weights do not fit schemes {self.source.name} -> {self.target.name}")
        info = meta.get("refine")
        if info and info.get("used"):
            state = {k[7:]: v for k, v in arrays.items() if k.startswith("refine.")}
            ref = arrays.get("refine_ref")
            if not state or ref is None or ref.shape != (self.target.num_points, 2):
                raise AdapterError(f"{p}: its image refinement stage is missing or incomplete")
            try:
                self.refiner = Refiner(RefineConfig(**info["config"]), ref, self.target, state,
                                       info.get("method", "cnn"))
                self.refiner.check()  # a bad file fails at load, not at first use
            except (ValueError, TypeError, KeyError) as exc:
                raise AdapterError(f"{p}: its image refinement stage cannot be read ({exc})") from None
        return self


def _ridge(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """Closed-form ridge (alpha by generalised cross-validation); NaN targets imputed by the column mean."""
    from sklearn.linear_model import RidgeCV

    y = np.where(np.isnan(y), np.nanmean(y, axis=0), y)
    y = np.nan_to_num(y)
    model = RidgeCV(alphas=alphas, fit_intercept=True).fit(x, y)
    return model.coef_.T.copy(), model.intercept_.copy(), float(model.alpha_)


def _local_weights(x: np.ndarray, y: np.ndarray, mean_source: np.ndarray, mean_target: np.ndarray,
                   k: int) -> np.ndarray:
    """(K_t, K_s) weights, each row summing to one over the k source points nearest the target
    point on the mean shapes: least squares over the aligned pairs x (N, 2K_s), y (N, 2K_t),
    shrunk towards the nearest point. NaN target points are left out."""
    n, k_s = len(x), mean_source.shape[0]
    src, tgt = x.reshape(n, k_s, 2), y.reshape(n, -1, 2)
    out = np.zeros((tgt.shape[1], k_s))
    for j in range(tgt.shape[1]):
        near = np.argsort(np.linalg.norm(mean_source - mean_target[j], axis=1), kind="stable")[:k]
        ok = ~np.isnan(tgt[:, j]).any(-1)
        out[j, near[0]] = 1.0
        if k == 1 or not ok.any():
            continue
        sub = src[:, near][ok]  # (N, k, 2): index the k points first, not a copy of every point
        a = np.concatenate([sub[..., 0], sub[..., 1]])  # (2N, k)
        t = np.concatenate([tgt[ok, j, 0], tgt[ok, j, 1]])
        # Sum to one by substitution: weights on the other points, relative to the nearest.
        d, r = a[:, 1:] - a[:, :1], t - a[:, 0]
        w = np.linalg.solve(d.T @ d + LOCAL_RIDGE * len(d) * np.eye(k - 1), d.T @ r)
        out[j, near] = np.r_[1.0 - w.sum(), w]
    return out


def _run_net(net, x: np.ndarray, device: str, chunk: int = 65536) -> np.ndarray:
    import torch

    out = np.empty((len(x), net[-2].out_features))
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            xb = torch.from_numpy(x[i:i + chunk].astype(np.float32)).to(device)
            out[i:i + chunk] = net(xb).float().cpu().numpy()
    return out


def _train_mlp(x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, linear, cfg: FitConfig,
               progress, device: str):
    """Residual MLP on top of ``linear``; AdamW, early stopping on the validation pairs. Returns
    (net at its best validation epoch, epochs run)."""
    import torch

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    resid = y - linear(x)
    mask = ~np.isnan(resid)
    resid = np.nan_to_num(resid)
    t = {k: torch.from_numpy(v.astype(np.float32)).to(device) for k, v in
         (("x", x), ("r", resid), ("m", mask.astype(np.float32)))}
    tr = torch.from_numpy(train_idx).to(device)
    va = torch.from_numpy(val_idx).to(device)
    proj = _input_projection(x[train_idx])
    net = _mlp(x.shape[1], y.shape[1], cfg.hidden, proj.shape[1])
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(proj.T))
        net[-1].scale.fill_(float(np.sqrt((resid[train_idx] ** 2).mean())) or 1.0)
    net = net.to(device)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)

    def loss_on(idx):
        pred = net(t["x"][idx])
        err = (pred - t["r"][idx]) * t["m"][idx]
        # Point distance in the aligned frame, the quantity NME measures.
        d = torch.sqrt((err.view(len(idx), -1, 2) ** 2).sum(-1) + 1e-12)
        return d.mean()

    best = (np.inf, None, 0)
    if len(va):
        with torch.no_grad():
            best = (float(loss_on(va)), {k: v.clone() for k, v in net.state_dict().items()}, 0)
    # At least ~16 steps an epoch, so that patience (in epochs) means something on small data.
    bs = max(1, min(cfg.batch_size, max(32, len(tr) // 16), len(tr)))
    steps_per_epoch = max(1, len(tr) // bs)
    epochs = max(1, min(cfg.epochs, -(-cfg.max_steps // steps_per_epoch)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    epoch = 0
    for epoch in range(1, epochs + 1):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=gen).to(device)]
        for i in range(0, steps_per_epoch * bs, bs):
            opt.zero_grad(set_to_none=True)
            loss_on(perm[i:i + bs]).backward()
            opt.step()
            sched.step()
        if progress:
            progress(epoch, epochs)
        if len(va):
            net.eval()
            with torch.no_grad():
                v = float(loss_on(va))
            if v < best[0] - 1e-7:
                best = (v, {k: w.clone() for k, w in net.state_dict().items()}, epoch)
            elif epoch - best[2] >= cfg.patience:
                break
    if best[1] is not None:
        net.load_state_dict(best[1])
    return net.eval(), epoch


@dataclass
class Pairs:
    """Records of the same faces in two schemes, matched by id."""

    ids: list[str]
    source: np.ndarray  # (N, K_s, 2)
    target: np.ndarray  # (N, K_t, 2)
    source_scheme: str
    target_scheme: str
    only_source: list[str]
    only_target: list[str]
    images: list[str] = field(default_factory=list)  # the target record's image of each pair
    source_depth: np.ndarray | None = None  # (N, K_s) when every source record has attributes z

    def subset(self, n: int, seed: int = 0) -> Pairs:
        """A seeded random ``n`` of the pairs (all of them when there are fewer)."""
        if n < 1:
            raise AdapterError(f"--max-pairs must be at least 1, got {n}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.ids))[:n])
        return Pairs([self.ids[i] for i in keep], self.source[keep], self.target[keep], self.source_scheme,
                     self.target_scheme, self.only_source, self.only_target,
                     [self.images[i] for i in keep] if self.images else [],
                     None if self.source_depth is None else self.source_depth[keep])


def one_scheme(records: list, side: str) -> str:
    schemes = sorted({r.scheme for r in records})
    if len(schemes) != 1:
        raise AdapterError(f"{side} records mix schemes ({', '.join(schemes) or 'none'}); "
                           "convert them to one scheme first")
    return schemes[0]


def record_depth(records: list) -> np.ndarray | None:
    """(N, K) per-point depth from each record's ``attributes["z"]``, or None when some record has
    none; a depth of the wrong length or with NaN is an error naming the record."""
    if not records or any("z" not in r.attributes for r in records):
        return None
    out = np.empty((len(records), len(records[0].points)))
    for i, r in enumerate(records):
        z = np.asarray(r.attributes["z"], float) if isinstance(r.attributes["z"], list) else np.array([])
        if z.shape != (len(r.points),) or not np.isfinite(z).all():
            raise AdapterError(f"record {r.id}: attributes z must be {len(r.points)} finite numbers, one a point")
        out[i] = z
    return out


def pair_records(source: list, target: list) -> Pairs:
    """Match FaceRecords by id. Ids on one side only are returned, not dropped silently."""
    s_scheme, t_scheme = one_scheme(source, "source"), one_scheme(target, "target")
    by_id = {r.id: r for r in target}
    src_ids = {r.id for r in source}
    common = [r for r in source if r.id in by_id]
    if not common:
        raise AdapterError(f"no face id is in both the source ({len(source)} records) and the target "
                           f"({len(target)} records); pairs are matched by id")
    return Pairs(ids=[r.id for r in common], source=np.stack([r.points for r in common]),
                 target=np.stack([by_id[r.id].points for r in common]), source_scheme=s_scheme,
                 target_scheme=t_scheme, only_source=sorted(src_ids - by_id.keys()),
                 only_target=sorted(by_id.keys() - src_ids), images=[by_id[r.id].image for r in common],
                 source_depth=record_depth(common))


def evaluate(adapter: LabelAdapter, pairs: Pairs, threshold: float = 0.08) -> list[dict]:
    """NME / FR / AUC in the target scheme for the deterministic mapping (when one exists), the
    mean-shape Procrustes baseline and the adapter."""
    from gapkit.errors import NoMappingError
    from gapkit.metrics import summary
    from gapkit.schemes import find_mapper

    tgt = adapter.target
    rows = []
    try:
        mapper = find_mapper(pairs.source_scheme, pairs.target_scheme)
        rows.append(dict(method=f"mapping {mapper.name}",
                         **summary(mapper(pairs.source), pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    except NoMappingError:
        pass
    rows.append(dict(method="mean-shape Procrustes", **summary(adapter.mean_shape_baseline(pairs.source), pairs.target,
                                                               tgt, adapter.normaliser, threshold=threshold)))
    shape = adapter.predict(pairs.source, pairs.source_depth if adapter.depth else None)
    rows.append(dict(method=f"adapter ({adapter.head})",
                     **summary(shape, pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    if adapter.refiner is not None:
        pred, refined, problems = adapter.refiner(pairs.images, shape, pairs.ids)
        rows.append(dict(method=f"adapter ({adapter.head}) + image refinement", refined=int(refined.sum()),
                         problems=[str(p) for p in problems],
                         **summary(pred, pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    return rows
