"""Intervals for benchmark cells: a two-level bootstrap over test faces and seeds.

A cell's per-face NMEs form an (S seeds, F faces) array over the same test faces. One
bootstrap replicate draws S seeds and F faces with replacement and takes the mean. Two
strategies are compared *paired by face*, since they share the test set: the same face
draw serves both, and each draws its own seeds. A difference counts as a finding only
when its 95% interval leaves out zero; otherwise it is a tie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPLICATES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float

    def separates(self) -> bool:
        """True when the interval leaves out zero (for a difference)."""
        return self.lo > 0 or self.hi < 0

    def __str__(self) -> str:
        return f"{self.mean:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


def _replicates(per_face: np.ndarray, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = per_face.shape[0]
    seeds = rng.integers(0, s, size=(len(faces), s))
    return np.array([per_face[sd][:, f].mean() for sd, f in zip(seeds, faces, strict=True)])


def _faces(n_faces: int, rng: np.random.Generator, replicates: int) -> np.ndarray:
    return rng.integers(0, n_faces, size=(replicates, n_faces))


def _estimate(point: float, reps: np.ndarray) -> Estimate:
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return Estimate(float(point), float(lo), float(hi))


def cell_interval(per_face: np.ndarray, seed: int = 0, replicates: int = REPLICATES) -> Estimate:
    """Mean NME in % of an (S, F) per-face array (fractions), with its 95% bootstrap interval."""
    x = 100 * np.asarray(per_face, float)
    rng = np.random.default_rng(seed)
    return _estimate(x.mean(), _replicates(x, _faces(x.shape[1], rng, replicates), rng))


def difference(a: np.ndarray, b: np.ndarray, seed: int = 0, replicates: int = REPLICATES) -> Estimate:
    """Mean NME of ``a`` minus that of ``b`` in percentage points (positive: ``b`` is better),
    paired by face, with its 95% bootstrap interval."""
    xa, xb = 100 * np.asarray(a, float), 100 * np.asarray(b, float)
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"cells scored on different test sets ({xa.shape[1]} and {xb.shape[1]} faces)")
    rng = np.random.default_rng(seed)
    faces = _faces(xa.shape[1], rng, replicates)
    return _estimate(xa.mean() - xb.mean(), _replicates(xa, faces, rng) - _replicates(xb, faces, rng))
