"""Similarity Procrustes (Umeyama, in its 2-D closed form), batched, reflection-free, in numpy and torch.

Shapes are (N, K, 2) or (K, 2) arrays of (x, y). A :class:`Similarity` maps
``p -> scale * p @ R.T + t`` per shape; it can be applied and inverted. NaN points and
zero weights are left out of the fit. Reflections are never allowed: a mirrored face
is not the same face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Similarity:
    """Batched 2-D similarity transforms: scale (N,), rotation (N, 2, 2), translation (N, 2)."""

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, K, 2) -> (N, K, 2); NaN stays NaN."""
        a = self.scale[:, None, None] * self.rotation
        return np.matmul(points, np.transpose(a, (0, 2, 1))) + self.translation[:, None, :]

    def __getitem__(self, index) -> Similarity:
        """The transforms of some shapes (an index, slice or mask over N)."""
        return Similarity(self.scale[index], self.rotation[index], self.translation[index])

    def inverse(self) -> Similarity:
        r_t = np.transpose(self.rotation, (0, 2, 1))
        s = 1.0 / self.scale
        return Similarity(s, r_t, -s[:, None] * np.einsum("nij,nj->ni", r_t, self.translation))

    @property
    def matrix(self) -> np.ndarray:
        """(N, 3, 3) homogeneous matrices."""
        m = np.zeros((len(self.scale), 3, 3))
        m[:, :2, :2] = self.scale[:, None, None] * self.rotation
        m[:, :2, 2] = self.translation
        m[:, 2, 2] = 1.0
        return m


def _weights(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
    """Per-point weights, NaN points at 0; None when every point counts equally (the fast path)."""
    missing = np.isnan(src).any(-1) | np.isnan(dst).any(-1) if (np.isnan(src).any() or np.isnan(dst).any()) \
        else None
    if weights is None and missing is None:
        return None
    w = np.ones(src.shape[:2]) if weights is None else np.broadcast_to(np.asarray(weights, float), src.shape[:2]).copy()
    if missing is not None:
        w = np.where(missing, 0.0, w)
    if (w < 0).any():
        raise ValueError("Procrustes weights must be non-negative")
    if ((w > 0).sum(axis=1) < 2).any():
        raise ValueError("Procrustes needs at least two present points per shape")
    return w


def procrustes(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """The least-squares similarity taking ``src`` onto ``dst`` (Umeyama 1991, det(R) = +1).

    ``src``, ``dst``: (N, K, 2) or (K, 2); ``dst`` may be a single (K, 2) target for all N.
    ``weights``: (N, K) or (K,), e.g. visibility; NaN points get weight 0.
    """
    src = np.asarray(src, float)
    src = src[None] if src.ndim == 2 else src
    dst = np.asarray(dst, float)
    one_target = dst.ndim == 2
    w = _weights(src, np.broadcast_to(dst, src.shape), weights)
    # In 2-D the reflection-free least-squares similarity is closed form (points as complex
    # numbers): the optimum of Umeyama's SVD with det(R) = +1, without the SVD. The sums
    # use raw moments, so no centred (N, K, 2) copies are made.
    if w is None:
        k = src.shape[1]
        flat = src.reshape(len(src), -1)
        ss = np.einsum("ni,ni->n", flat, flat) / k
        if one_target:
            # One BLAS pass gives both cross terms and the centroid.
            proj = np.zeros((2 * k, 4))
            proj[:, 0] = dst.reshape(-1)
            proj[:, 1] = np.stack([dst[:, 1], -dst[:, 0]], -1).reshape(-1)
            proj[0::2, 2] = proj[1::2, 3] = 1.0
            moments = flat @ (proj / k)
            sd_dot, sd_crs, mu_s = moments[:, 0], moments[:, 1], moments[:, 2:]
            mu_d = np.broadcast_to(dst.mean(axis=0), mu_s.shape)
        else:
            dst = np.broadcast_to(dst, src.shape)
            mu_s = src.mean(axis=1)
            mu_d = dst.mean(axis=1)
            sd_dot = np.einsum("ni,ni->n", flat, dst.reshape(len(src), -1)) / k
            sd_crs = (np.einsum("nk,nk->n", src[..., 0], dst[..., 1])
                      - np.einsum("nk,nk->n", src[..., 1], dst[..., 0])) / k
    else:
        dst = np.broadcast_to(dst, src.shape)
        wn = w / w.sum(axis=1, keepdims=True)
        s0, d0 = np.nan_to_num(src), np.nan_to_num(dst)
        mu_s = np.einsum("nk,nkj->nj", wn, s0)
        mu_d = np.einsum("nk,nkj->nj", wn, d0)
        ss = np.einsum("nk,nkj,nkj->n", wn, s0, s0)
        sd_dot = np.einsum("nk,nkj,nkj->n", wn, s0, d0)
        sd_crs = np.einsum("nk,nk,nk->n", wn, s0[..., 0], d0[..., 1]) - np.einsum("nk,nk,nk->n", wn, s0[..., 1], d0[..., 0])
    dot = sd_dot - (mu_s * mu_d).sum(axis=1)
    crs = sd_crs - (mu_s[:, 0] * mu_d[:, 1] - mu_s[:, 1] * mu_d[:, 0])
    var_s = ss - (mu_s * mu_s).sum(axis=1)
    if (var_s <= 1e-12 * np.maximum(ss, 1e-300)).any() or (var_s <= 0).any():
        raise ValueError("degenerate shape: all source points coincide")
    norm = np.hypot(dot, crs)
    safe = np.where(norm > 0, norm, 1.0)
    c, s = np.where(norm > 0, dot / safe, 1.0), np.where(norm > 0, crs / safe, 0.0)
    rot = np.empty((len(src), 2, 2))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, -s, s, c
    scale = norm / var_s
    t = np.empty_like(mu_d)
    t[:, 0] = mu_d[:, 0] - scale * (c * mu_s[:, 0] - s * mu_s[:, 1])
    t[:, 1] = mu_d[:, 1] - scale * (s * mu_s[:, 0] + c * mu_s[:, 1])
    return Similarity(scale, rot, t)


def align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, Similarity]:
    """``src`` moved onto ``dst`` (N, K, 2), and the transform used."""
    src3 = src[None] if np.ndim(src) == 2 else np.asarray(src, float)
    tf = procrustes(src3, dst, weights)
    return tf.apply(src3), tf


def generalised_procrustes(shapes: np.ndarray, weights: np.ndarray | None = None, max_iter: int = 100,
                           tol: float = 1e-6) -> tuple[np.ndarray, Similarity]:
    """Mean shape of (N, K, 2) shapes by GPA: align all to the running mean until it settles.

    The mean is kept centred with unit RMS radius; returns (mean (K, 2), transforms to it).
    """
    shapes = np.asarray(shapes, float)

    def normalise(m: np.ndarray) -> np.ndarray:
        m = m - m.mean(axis=0)
        return m / np.sqrt((m ** 2).sum(axis=1).mean())

    mean = normalise(np.nanmean(shapes, axis=0) if np.isnan(shapes).any() else shapes[0])
    for _ in range(max_iter):
        aligned, tf = align(shapes, mean, weights)
        new = normalise(np.nanmean(aligned, axis=0))
        new = align(new, mean)[0][0]  # keep the mean's orientation fixed
        done = np.abs(new - mean).max() < tol
        mean = normalise(new)
        if done:
            break
    return mean, procrustes(shapes, mean, weights)


def procrustes_torch(src, dst, weights=None):
    """Differentiable batched version for torch tensors (N, K, 2); returns (scale, R, t).

    NaN-free inputs expected (mask with ``weights``). Reflection-free like :func:`procrustes`.
    """
    import torch  # deferred: gapkit.adapt, .refine and .gap import this module and stay torch-free

    w = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device) if weights is None else \
        weights.to(src.dtype).expand(src.shape[:2])
    wn = w / w.sum(dim=1, keepdim=True)
    mu_s = torch.einsum("nk,nkj->nj", wn, src)
    mu_d = torch.einsum("nk,nkj->nj", wn, dst)
    a, b = src - mu_s[:, None], dst - mu_d[:, None]
    cov = torch.einsum("nk,nki,nkj->nij", wn, b, a)
    var_s = torch.einsum("nk,nkj,nkj->n", wn, a, a)
    u, sig, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.stack([torch.ones_like(d), d], dim=1)
    rot = torch.einsum("nij,nj,njk->nik", u, fix, vt)
    scale = (sig * fix).sum(dim=1) / var_s
    t = mu_d - scale[:, None] * torch.einsum("nij,nj->ni", rot, mu_s)
    return scale, rot, t
