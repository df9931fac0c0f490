"""Landmark error metrics: NME with a named normaliser, per-point and per-group errors,
failure rate, CED and AUC (Simpson's rule on [0, t], as PIPNet and menpofit report it).

Shapes are (N, K, 2) in pixels. NME values are fractions internally; reports print percent
with the normaliser named, e.g. ``NME(inter_ocular) 3.41%``.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import simpson

from gapkit.errors import ConfigError
from gapkit.schemes import LandmarkScheme


def normaliser(gt: np.ndarray, scheme: LandmarkScheme, name: str | None = None,
               bbox: np.ndarray | None = None) -> np.ndarray:
    """(N,) normalising distance from the ground truth.

    ``inter_ocular`` / ``inter_pupil``: distance between the centroids of the scheme's two
    point sets. ``bbox``: sqrt(w * h) of the given boxes (N, 4 as x, y, w, h), else of the
    ground-truth landmark box.
    """
    gt = np.asarray(gt, float).reshape(-1, scheme.num_points, 2)
    name = name or scheme.default_normaliser
    if name not in scheme.normalisers:
        raise ConfigError(f"scheme {scheme.name} has no normaliser {name!r}; one of {', '.join(scheme.normalisers)}")
    n = scheme.normalisers[name]
    if n.bbox:
        if bbox is not None:
            b = np.asarray(bbox, float).reshape(-1, 4)
            return np.sqrt(b[:, 2] * b[:, 3])
        size = np.nanmax(gt, axis=1) - np.nanmin(gt, axis=1)
        return np.sqrt(size[:, 0] * size[:, 1])
    a = np.nanmean(gt[:, n.a], axis=1)
    b = np.nanmean(gt[:, n.b], axis=1)
    return np.linalg.norm(a - b, axis=1)


def point_errors(pred: np.ndarray, gt: np.ndarray, scheme: LandmarkScheme, name: str | None = None,
                 visible: np.ndarray | None = None, bbox: np.ndarray | None = None) -> np.ndarray:
    """(N, K) point-to-point errors divided by the normaliser; NaN where the point is not scored
    (missing or invisible in the ground truth)."""
    pred = np.asarray(pred, float).reshape(-1, scheme.num_points, 2)
    gt = np.asarray(gt, float).reshape(pred.shape)
    d = normaliser(gt, scheme, name, bbox)
    if (~np.isfinite(d) | (d <= 0)).any():
        raise ValueError("a ground-truth shape has a zero or undefined normaliser")
    scored = ~np.isnan(gt).any(-1)
    if visible is not None:
        scored &= np.asarray(visible, bool).reshape(scored.shape)
    if np.isnan(pred[scored]).any():
        raise ValueError("a prediction is missing (NaN) where the ground truth is scored")
    err = np.linalg.norm(pred - gt, axis=-1) / d[:, None]
    return np.where(scored, err, np.nan)


def nme(pred: np.ndarray, gt: np.ndarray, scheme: LandmarkScheme, name: str | None = None,
        visible: np.ndarray | None = None, bbox: np.ndarray | None = None) -> np.ndarray:
    """(N,) normalised mean error per face, as a fraction (x100 for percent)."""
    return np.nanmean(point_errors(pred, gt, scheme, name, visible, bbox), axis=1)


def group_errors(errors: np.ndarray, scheme: LandmarkScheme) -> dict[str, float]:
    """Mean normalised error of each named group over all faces, from :func:`point_errors`."""
    return {g: float(np.nanmean(errors[:, idx])) for g, idx in scheme.groups.items()}


def failure_rate(nmes: np.ndarray, threshold: float = 0.08) -> float:
    """Share of faces whose NME exceeds ``threshold``."""
    return float((np.asarray(nmes) > threshold).mean())


def ced(nmes: np.ndarray, threshold: float = 0.08, step: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: (x, fraction of faces with NME <= x) on [0, threshold]."""
    x = np.arange(0.0, threshold + step / 2, step)
    v = np.sort(np.asarray(nmes, float))
    return x, np.searchsorted(v, x, side="right") / len(v)


def auc(nmes: np.ndarray, threshold: float = 0.08, step: float = 1e-4) -> float:
    """Area under the CED on [0, threshold], divided by threshold (1 = every face perfect)."""
    x, y = ced(nmes, threshold, step)
    return float(simpson(y, x=x) / threshold)


def summary(pred: np.ndarray, gt: np.ndarray, scheme: LandmarkScheme, name: str | None = None,
            visible: np.ndarray | None = None, threshold: float = 0.08, bbox: np.ndarray | None = None,
            per_face: bool = False) -> dict:
    """NME (percent), FR and AUC at ``threshold``, named by normaliser; with ``per_face`` also
    the (N,) NME of each face as a fraction."""
    name = name or scheme.default_normaliser
    each = nme(pred, gt, scheme, name, visible, bbox)
    out = {"normaliser": name, "n": len(each), "nme_pct": float(100 * each.mean()),
           f"fr@{threshold:g}": failure_rate(each, threshold), f"auc@{threshold:g}": auc(each, threshold)}
    return out | {"per_face_nme": each} if per_face else out


def format_nme(value_pct: float, name: str) -> str:
    return f"NME({name}) {value_pct:.2f}%"
