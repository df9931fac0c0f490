"""The shape fit: a pure function from paired shapes and settings to the adapter's weights.

Per face, the source shape (N, K_s, 2) is aligned to the source mean shape with a similarity
(Procrustes); the target shape (N, K_t, 2) is predicted in that aligned frame with a linear
map plus an optional MLP residual, and the similarity is undone. With the source's per-point
depth (N, K_s), centred per face and scaled with the similarity, it joins the aligned (x, y)
as a third coordinate.

The linear map is a local prior plus a ridge residual. The prior puts each target point at
a weighted mean of its nearest source points (weights summing to one, fitted on the pairs);
ridge then fits what that misses, in closed form. A ridge alone shrinks towards the mean
shape, which throws the face's own expression away when pairs are few; shrinking towards
"follow the nearby source points" keeps it.

With few pairs the MLP overfits, so ``head="auto"`` picks between the linear head and the
MLP by validation error (k-fold cross-validation when the training set is small). Training
is seeded and deterministic on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gapkit.adapt.config import FitConfig, FitReport
from gapkit.adapt.mlp import run_mlp, train_mlp
from gapkit.align import generalised_procrustes, procrustes
from gapkit.metrics import nme
from gapkit.schemes import LandmarkScheme

LOCAL_RIDGE = 1e-4  # shrinks each target point's weights towards its nearest source point
SMALL_DATA = 200  # below this many pairs the head is chosen by k-fold CV, not one split


@dataclass
class Frame:
    """The aligned frame fitted on the pairs: mean shapes and the feature and target means."""

    mean_source: np.ndarray  # (K_s, 2), centred, unit RMS radius
    mean_target: np.ndarray  # (K_t, 2) in the same aligned frame
    x_mean: np.ndarray  # (2K_s or 3K_s,)
    y_mean: np.ndarray  # (2K_t,)


@dataclass
class LinearHead:
    """Centred features -> centred targets: ``x @ w + b``, and the ridge's alpha."""

    w: np.ndarray  # (2K_s or 3K_s, 2K_t)
    b: np.ndarray  # (2K_t,)
    alpha: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b


@dataclass
class ShapeFit:
    """What a shape fit yields: the frame, the linear head, the MLP when it is the head, the report."""

    frame: Frame
    linear: LinearHead
    head: str  # "linear" or "mlp"
    net: object | None  # the trained MLP (eval mode, on the fit device) when head == "mlp"
    report: FitReport


@dataclass
class _Data:
    """Centred aligned features (N, D) and targets (N, 2K_t) with what scoring them needs."""

    x: np.ndarray
    y: np.ndarray
    tgt: np.ndarray  # (N, K_t, 2) image points
    tf: object  # the per-face similarities
    frame: Frame
    target: LandmarkScheme
    normaliser: str
    device: str


def align_source(src: np.ndarray, mean_source: np.ndarray, depth: np.ndarray | None = None):
    """Source shapes moved onto the source mean shape, missing points filled from it
    (N, 2K_s), then with ``depth`` (N, K_s) the depth centred per face and scaled by the same
    similarity (N, 3K_s); and the similarity used."""
    tf = procrustes(src, mean_source)
    aligned = tf.apply(src)
    if np.isnan(aligned).any():
        aligned = np.where(np.isnan(aligned), mean_source[None], aligned)
    x = aligned.reshape(len(src), -1)
    if depth is not None:
        z = depth - np.nanmean(depth, axis=1, keepdims=True)
        x = np.concatenate([x, np.nan_to_num(z * tf.scale[:, None])], axis=1)
    return x, tf


def fit_shapes(src: np.ndarray, tgt: np.ndarray, depth: np.ndarray | None, target: LandmarkScheme,
               normaliser: str, cfg: FitConfig, device: str,
               progress: Callable[[int, int], None] | None = None) -> ShapeFit:
    """Fit the shape map on checked pairs ``src`` (N, K_s, 2) and ``tgt`` (N, K_t, 2), with the
    source's depth (N, K_s) or None. NaN target points are left out of the loss."""
    data = _centred_pairs(src, tgt, depth, target, normaliser, device)
    n = len(src)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_val = max(1, int(round(cfg.val_frac * n))) if cfg.val_frac > 0 else 0
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    rep = FitReport(n_pairs=n, n_train=len(train_idx), n_val=n_val, head=cfg.head, ridge_alpha=0.0)

    head = cfg.head
    if head == "auto" and n < SMALL_DATA:
        rep.cv = _cross_validate(data, cfg)
        head = "mlp" if rep.cv["mlp_nme_pct"] < rep.cv["linear_nme_pct"] else "linear"

    lin = fit_linear(data.x[train_idx], data.y[train_idx], data.frame, cfg)
    rep.ridge_alpha = lin.alpha
    net = None
    if n_val:
        rep.val_nme_linear_pct = _val_nme(data, lin, None, val_idx)
    if head in ("mlp", "auto"):
        mlp, rep.epochs_run = train_mlp(data.x, data.y, train_idx, val_idx, lin, cfg, progress, device)
        if n_val:
            rep.val_nme_mlp_pct = _val_nme(data, lin, mlp, val_idx)
        if head == "auto":
            better = n_val and rep.val_nme_mlp_pct < rep.val_nme_linear_pct
            head = "mlp" if better else "linear"
        if head == "mlp":
            net = mlp
    if head == "linear" and n_val:
        # Nothing to stop early: refit the closed form on every pair.
        lin = fit_linear(data.x, data.y, data.frame, cfg)
        rep.ridge_alpha = lin.alpha
    rep.head = head
    return ShapeFit(data.frame, lin, head, net, rep)


def _centred_pairs(src: np.ndarray, tgt: np.ndarray, depth: np.ndarray | None, target: LandmarkScheme,
                   normaliser: str, device: str) -> _Data:
    """The frame fitted on the pairs, and the pairs in it, centred."""
    mean_source, _ = generalised_procrustes(src)
    x_all, tf = align_source(src, mean_source, depth)
    a_tgt = tf.apply(tgt)
    mean_target = np.nanmean(a_tgt, axis=0)
    y_all = a_tgt.reshape(len(src), -1)
    frame = Frame(mean_source, mean_target, x_all.mean(axis=0), np.nanmean(y_all, axis=0))
    return _Data(x_all - frame.x_mean, y_all - frame.y_mean, tgt, tf, frame, target, normaliser, device)


def fit_linear(x: np.ndarray, y: np.ndarray, frame: Frame, cfg: FitConfig) -> LinearHead:
    """The linear head on centred features and targets: local prior + ridge residual, folded
    into one (weights, bias) for the centred frame, and the ridge's alpha."""
    k_s = frame.mean_source.shape[0]
    k = min(cfg.local_neighbours, k_s)
    if k < 1:
        return LinearHead(*_ridge(x, y, cfg.ridge_alphas))
    k2 = 2 * k_s
    local = _local_weights((x + frame.x_mean)[:, :k2], y + frame.y_mean, frame.mean_source, frame.mean_target, k)
    prior = np.zeros((x.shape[1], y.shape[1]))  # depth rows stay zero
    prior[:k2] = np.kron(local.T, np.eye(2))  # x from x, y from y: the prior is rotation-equivariant
    w, b, alpha = _ridge(x, y - (x + frame.x_mean) @ prior + frame.y_mean, cfg.ridge_alphas)
    return LinearHead(prior + w, b + frame.x_mean @ prior - frame.y_mean, alpha)


def _val_nme(data: _Data, lin: LinearHead, net, idx: np.ndarray) -> float:
    """Mean NME (%) of the linear head (plus ``net``) on pairs ``idx``, in image points."""
    x = data.x[idx]
    y = lin(x)
    if net is not None:
        y = y + run_mlp(net, x, data.device)
    pred = data.tf[idx].inverse().apply((y + data.frame.y_mean).reshape(len(x), -1, 2))
    return float(100 * nme(pred, data.tgt[idx], data.target, data.normaliser).mean())


def _cross_validate(data: _Data, cfg: FitConfig) -> dict:
    """k-fold NME of the linear and MLP heads: the capacity choice for small data."""
    n = len(data.x)
    folds = np.array_split(np.random.default_rng(cfg.seed + 1).permutation(n), min(cfg.folds, n))
    errs: dict[str, list[float]] = {"linear": [], "mlp": []}
    for f, val_idx in enumerate(folds):
        val_idx = np.sort(val_idx)
        train_idx = np.setdiff1d(np.arange(n), val_idx)
        lin = fit_linear(data.x[train_idx], data.y[train_idx], data.frame, cfg)
        errs["linear"].append(_val_nme(data, lin, None, val_idx))
        # Inner split of the training fold for early stopping, never the held-out fold.
        inner = np.random.default_rng(cfg.seed + 2 + f).permutation(train_idx)
        n_in = max(1, int(round(cfg.val_frac * len(inner))))
        net, _ = train_mlp(data.x, data.y, np.sort(inner[n_in:]), np.sort(inner[:n_in]), lin, cfg, None,
                           data.device)
        errs["mlp"].append(_val_nme(data, lin, net, val_idx))
    return {"folds": len(folds), "linear_nme_pct": float(np.mean(errs["linear"])),
            "mlp_nme_pct": float(np.mean(errs["mlp"]))}


def _ridge(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """Closed-form ridge (alpha by generalised cross-validation); NaN targets imputed by the column mean."""
    # Deferred: scikit-learn takes seconds to import and only fitting needs it (not predict, not the CLI).
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
