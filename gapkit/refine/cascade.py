"""The descriptor cascade: the image refiner that learns from tens of faces.

Cascaded regression on fixed features, in the manner of the supervised descent method
(Xiong & De la Torre, 2013): at each point a histogram-of-gradients descriptor (8 orientation
channels sampled on a 4 x 4 grid of cells around the point, at each cell size) feeds that
point's own ridge regression to an offset, and a few such stages run in cascade. Being linear
in features it does not need to learn, it helps where a CNN has too few faces to learn from.

Each stage picks every point's ridge strength by k-fold cross-validation over faces, and the
next stage trains on the out-of-fold outputs, so later stages see the errors of unseen faces
rather than the shrunken ones of faces already fitted.

Crops are grey (N, S, S) uint8 in the refiner's frame; points are 0-based crop pixels (x, y).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from gapkit.refine.base import ImageRefiner
from gapkit.refine.config import RefineConfig
from gapkit.refine.frame import grey, mirror, mirror_points
from gapkit.schemes import LandmarkScheme

ORIENTATIONS = 8
GRID = np.array([(i, j) for j in (-1.5, -0.5, 0.5, 1.5) for i in (-1.5, -0.5, 0.5, 1.5)])  # cell centres
STATE_KEYS = ("mean", "weight", "bias")


def gradient_maps(gray: np.ndarray, cells: tuple[float, ...]) -> list[np.ndarray]:
    """Per cell size, (8, S, S) gradient magnitude split softly into orientation channels and
    pooled by a Gaussian of the cell's half width."""
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy)
    pos = ang * (ORIENTATIONS / (2 * np.pi))
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64) % ORIENTATIONS
    hi = (lo + 1) % ORIENTATIONS
    channels = np.stack([mag * ((lo == b) * (1 - frac) + (hi == b) * frac) for b in range(ORIENTATIONS)])
    return [np.stack([cv2.GaussianBlur(c, (0, 0), cell / 2) for c in channels]) for cell in cells]


def describe(maps: list[np.ndarray], pts: np.ndarray, cells: tuple[float, ...]) -> np.ndarray:
    """(K, 128 * len(cells)) descriptors at crop points (K, 2): each cell size's 128 values
    normalised as SIFT does (unit length, clipped at 0.2, unit length) and square-rooted."""
    out = []
    for m, cell in zip(maps, cells, strict=True):
        q = (pts[:, None, :] + GRID[None] * cell).reshape(-1, 2).astype(np.float32)
        s = m.shape[-1]
        xs, ys = np.clip(q[:, 0], 0, s - 1), np.clip(q[:, 1], 0, s - 1)
        x0, y0 = np.minimum(xs.astype(np.int64), s - 2), np.minimum(ys.astype(np.int64), s - 2)
        fx, fy = xs - x0, ys - y0
        v = (m[:, y0, x0] * (1 - fx) * (1 - fy) + m[:, y0, x0 + 1] * fx * (1 - fy)
             + m[:, y0 + 1, x0] * (1 - fx) * fy + m[:, y0 + 1, x0 + 1] * fx * fy)  # bilinear, (8, K * 16)
        d = v.reshape(ORIENTATIONS, len(pts), len(GRID)).transpose(1, 2, 0).reshape(len(pts), -1)
        d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-6)
        d = np.minimum(d, 0.2)
        d = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-6)
        out.append(np.sqrt(d))
    return np.concatenate(out, 1).astype(np.float32)


def _features(crops: np.ndarray, face: np.ndarray, pts: np.ndarray, cells: tuple[float, ...]) -> np.ndarray:
    """(M, K, D) descriptors of samples whose crop is ``crops[face[m]]`` and points ``pts[m]``."""
    out = np.empty((len(pts), pts.shape[1], 128 * len(cells)), np.float32)
    for f in np.unique(face):
        maps = gradient_maps(crops[f], cells)
        for m in np.flatnonzero(face == f):
            out[m] = describe(maps, pts[m], cells)
    return out


def _solve(gram: np.ndarray, cross: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """Ridge weights (A, D, 2) for each strength, the penalty scaled by the Gram's mean eigenvalue."""
    lam, vec = np.linalg.eigh(gram)
    scale = max(float(np.trace(gram)) / len(gram), 1e-12)
    proj = vec.T @ cross
    return np.stack([vec @ (proj / (lam + a * scale)[:, None]) for a in strengths])


def _stats(f: np.ndarray, y: np.ndarray) -> tuple:
    """Sums for centred ridge: count, sum of features, Gram, cross products, sum of targets."""
    return len(f), f.sum(0), f.T @ f, f.T @ y, y.sum(0)


def _centred(st: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n, s, g, c, t = st
    n = max(n, 1)  # a point labelled on no face of this part: zero weights, not NaN
    mu, ybar = s / n, t / n
    return mu, ybar, g - np.outer(s, mu), c - np.outer(s, ybar)


def train_cascade(crops: np.ndarray, init: np.ndarray, target: np.ndarray, flip: np.ndarray, *,
                  cells: tuple[float, ...], stages: int, samples: int, jitter: float,
                  strengths: tuple[float, ...], folds: int = 5, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Fit a cascade on grey crops (N, S, S) with initial and target points (N, K, 2); NaN target
    points are left out of their point's fit. Every face is used as it is and mirrored, each
    with its given start and, where there are fewer than ``samples`` of those, jittered copies
    (``jitter`` px per face and per point) up to about ``samples`` in all. Returns the state:
    mean (T, K, D), weight (T, K, D, 2), bias (T, K, 2)."""
    rng = np.random.default_rng(seed)
    crops2, face, cur, goal, plain, fold = _samples(crops, init, target, flip, samples, jitter, folds, rng)
    a = np.asarray(strengths, float)
    state = {key: [] for key in STATE_KEYS}
    for _ in range(stages):
        feats = _features(crops2, face, cur, cells)
        *arrays, cur = _stage(feats, cur, goal, fold, plain, a, folds)
        for key, val in zip(STATE_KEYS, arrays, strict=True):
            state[key].append(val)
        if progress:
            progress(1)
    return {key: np.stack(v).astype(np.float32) for key, v in state.items()}


def _samples(crops: np.ndarray, init: np.ndarray, target: np.ndarray, flip: np.ndarray, samples: int,
             jitter: float, folds: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The training starts: grey crops of the faces and their mirrors (2N, S, S); for each start
    its crop index, points, goal, whether it is a face's own unjittered start, and its fold."""
    n = len(init)
    mc, mi = mirror(crops, init, flip)
    mt = mirror_points(target, flip, crops.shape[2])
    crops2, init2, target2 = np.concatenate([crops, mc]), np.concatenate([init, mi]), np.concatenate([target, mt])
    copies = max(1, int(np.ceil(samples / (2 * n))))  # thousands of faces need no jittered copies
    face = np.repeat(np.arange(2 * n), copies)
    start = np.repeat(init2, copies, axis=0)
    noise = rng.normal(0, jitter, (len(start), 1, 2)) + rng.normal(0, jitter, start.shape)
    noise[::copies] = 0  # each face keeps one start as the shape adapter gave it
    cur = start + noise
    goal = target2[face]
    plain = np.zeros(len(cur), bool)
    plain[::copies] = True
    fold = (rng.permutation(n) % folds)[face % n]  # a face and its mirror share a fold
    return crops2, face, cur, goal, plain, fold


def _stage(feats: np.ndarray, cur: np.ndarray, goal: np.ndarray, fold: np.ndarray, plain: np.ndarray,
           a: np.ndarray, folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One stage on descriptors (M, K, D) at the current points (M, K, 2): its mean (K, D), weight
    (K, D, 2) and bias (K, 2) fitted on every start, and the next points, out of fold."""
    k = cur.shape[1]
    delta = goal - cur
    nxt = cur.copy()
    mean, weight, bias = (np.empty((k, feats.shape[2])), np.empty((k, feats.shape[2], 2)), np.empty((k, 2)))
    err = np.zeros((k, len(a)))
    fits = []
    for j in range(k):
        total, cv_w, err[j] = _cv_point(feats[:, j].astype(np.float64), delta[:, j], fold, plain, a, folds)
        fits.append((total, cv_w))
    best = int(np.argmin(err.sum(0)))  # one strength a stage: one per point is noisier on few faces
    for j, (total, cv_w) in enumerate(fits):
        f = feats[:, j].astype(np.float64)
        mu, ybar, g, c = _centred(total)
        mean[j], weight[j], bias[j] = mu, _solve(g, c, a[best:best + 1])[0], ybar
        for v, (mv, yv, w) in enumerate(cv_w):  # out-of-fold outputs for the next stage
            rows = fold == v
            nxt[rows, j] += (f[rows] - mv) @ w[best] + yv
    return mean, weight, bias, nxt


def _cv_point(f: np.ndarray, delta: np.ndarray, fold: np.ndarray, plain: np.ndarray, a: np.ndarray,
              folds: int) -> tuple[tuple, list, np.ndarray]:
    """One point's k-fold ridge over descriptors f (M, D) and offsets (M, 2): the sums over every
    start, each fold's (mean, target mean, weights per strength) fitted without it, and the
    summed held-out error of each strength on the faces' own starts."""
    ok = ~np.isnan(delta).any(-1)
    y = np.nan_to_num(delta)
    per_fold = [_stats(f[ok & (fold == v)], y[ok & (fold == v)]) for v in range(folds)]
    total = tuple(sum(p[i] for p in per_fold) for i in range(5))
    err = np.zeros(len(a))
    cv_w = []
    for v in range(folds):
        mu, ybar, g, c = _centred(tuple(t - p for t, p in zip(total, per_fold[v], strict=True)))
        w = _solve(g, c, a)
        cv_w.append((mu, ybar, w))
        held = ok & (fold == v) & plain
        if held.any():
            pred = np.einsum("md,adt->amt", f[held] - mu, w) + ybar
            err += np.linalg.norm(pred - y[held], axis=-1).sum(1)
    return total, cv_w, err


def run_cascade(state: dict[str, np.ndarray], crops: np.ndarray, init: np.ndarray, cells: tuple[float, ...],
                flip: np.ndarray | None = None) -> np.ndarray:
    """Refined crop points (N, K, 2); with ``flip`` (the scheme's permutation), the mean of the
    crop and its mirror image."""
    def run(c: np.ndarray, p: np.ndarray) -> np.ndarray:
        out = np.asarray(p, float).copy()
        for i in range(len(c)):
            maps = gradient_maps(c[i], cells)
            for t in range(len(state["mean"])):
                f = describe(maps, out[i], cells)
                out[i] += np.einsum("kd,kdt->kt", f - state["mean"][t], state["weight"][t]) + state["bias"][t]
        return out

    res = run(crops, init)
    if flip is not None:
        mc, mp = mirror(crops, init, flip)
        _, back = mirror(mc, run(mc, mp), flip)
        res = (res + back) / 2
    return res


def check_state(state: dict[str, np.ndarray], k: int, cells: tuple[float, ...], stages: int) -> None:
    """Raise ValueError unless the arrays fit K points, the cell sizes and the stage count."""
    d = 128 * len(cells)
    want = {"mean": (stages, k, d), "weight": (stages, k, d, 2), "bias": (stages, k, 2)}
    for key, shape in want.items():
        got = state.get(key)
        if got is None or got.shape != shape:
            raise ValueError(f"cascade array {key} is {None if got is None else got.shape}, expected {shape}")
        if not np.isfinite(got).all():
            raise ValueError(f"cascade array {key} holds NaN or infinity")


class CascadeRefiner(ImageRefiner):
    """The descriptor cascade as an image refiner: grey crops, refitted on every face once kept."""

    name = "cascade"
    refit_on_all = True

    @staticmethod
    def crop_size(cfg: RefineConfig) -> int:
        return cfg.cascade_size

    @staticmethod
    def prepare(crops: np.ndarray) -> np.ndarray:
        return grey(crops)

    @staticmethod
    def work(cfg: RefineConfig) -> int:
        return 25 * cfg.cascade_stages  # a stage takes about as long as 25 CNN steps

    @classmethod
    def train(cls, crops: np.ndarray, init: np.ndarray, target: np.ndarray, cfg: RefineConfig,
              scheme: LandmarkScheme, device: str, tick: Callable[[int], None]) -> CascadeRefiner:
        state = train_cascade(crops, init, target, np.array(scheme.flip), cells=cfg.cascade_cells,
                              stages=cfg.cascade_stages, samples=cfg.cascade_samples, jitter=cfg.cascade_jitter,
                              strengths=cfg.cascade_strengths, seed=cfg.seed, progress=lambda k: tick(25 * k))
        return cls(cfg, scheme, state)

    def check(self) -> None:
        check_state(self.state, self.scheme.num_points, self.cfg.cascade_cells, self.cfg.cascade_stages)

    def run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        return run_cascade(self.state, crops, pts, self.cfg.cascade_cells, self.test_flip())
