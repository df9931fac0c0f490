"""Label-adaptation speed on CPU (and CUDA when there is one).

Prints:
1. batched Procrustes shapes/s against ``scipy.spatial.procrustes`` called in a Python loop
   (the baseline), for the adapter's case (every shape onto one mean shape) and for pairs;
2. the time to fit an adapter on 6,296 pairs of 68 -> 68 points (300-W's training set with
   flips), head forced to MLP so the number covers training, not just the closed form;
3. apply throughput in shapes/s.

Shapes come from the real 300-W subset in ../shared/data when present (re-posed copies),
else from gapkit's procedural fixture face. Timings are the best of 3 after a warm-up.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import procrustes as scipy_procrustes
from timing import best

from gapkit.adapt import FitConfig, LabelAdapter
from gapkit.align import procrustes
from gapkit.devices import resolve_device

REPO = Path(__file__).resolve().parents[1]


def base_shapes() -> tuple[np.ndarray, str]:
    shared = REPO.parent / "shared" / "data" / "300w"
    if shared.is_dir():
        from gapkit.faceset import load

        recs, _ = load(shared)
        return np.stack([r.points for r in recs]), "300-W subset"
    sys.path.insert(0, str(REPO))
    from fixtures.make_fixtures import face68

    return face68()[None] * 100 + 200, "fixture face"


def make_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` source shapes and targets with a non-linear jaw gap, under random similarities."""
    shapes, origin = base_shapes()
    rng = np.random.default_rng(seed)
    src = shapes[rng.integers(len(shapes), size=n)]
    src = src - src.mean(axis=1, keepdims=True)
    ang, s = rng.uniform(-0.4, 0.4, n), rng.uniform(0.6, 1.4, n)
    c, si = np.cos(ang), np.sin(ang)
    rot = np.stack([np.stack([c, -si], -1), np.stack([si, c], -1)], -2)
    src = s[:, None, None] * np.einsum("nkj,nij->nki", src, rot) + rng.uniform(100, 300, (n, 1, 2))
    yaw = (src[:, 30, 0] - 0.5 * (src[:, 0, 0] + src[:, 16, 0])) / np.ptp(src[:, :17, 0], axis=1)
    tgt = src.copy()
    tgt[:, :17, 0] += 40 * s[:, None] * yaw[:, None] * np.abs(yaw[:, None])
    return src + rng.normal(size=src.shape), tgt, origin


def main() -> None:
    import torch

    src, tgt, origin = make_pairs(6296)
    print(f"shapes: {origin}; torch {torch.__version__}, {torch.get_num_threads()} threads")

    n_loop = 2000
    t_scipy = best(lambda: [scipy_procrustes(tgt[i], src[i]) for i in range(n_loop)], repeat=1) / n_loop
    big = np.concatenate([src] * 40)  # 251,840 shapes
    mean = src.mean(axis=0)
    t_one = best(lambda: procrustes(big, mean), 3, True) / len(big)
    t_pairs = best(lambda: procrustes(big, big[::-1]), 3, True) / len(big)
    print(f"scipy.spatial.procrustes in a loop (baseline): {1 / t_scipy:12,.0f} shapes/s")
    print(f"gapkit procrustes, onto one mean shape       : {1 / t_one:12,.0f} shapes/s  "
          f"ratio {t_scipy / t_one:6.1f}x (target >= 100x)")
    print(f"gapkit procrustes, shape pairs               : {1 / t_pairs:12,.0f} shapes/s  "
          f"ratio {t_scipy / t_pairs:6.1f}x")

    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        adapter = LabelAdapter("ibug68", "ibug68")
        t = time.perf_counter()
        rep = adapter.fit(src, tgt, FitConfig(head="mlp", device=device))
        t_fit = time.perf_counter() - t
        print(f"[{device}] fit 6,296 pairs 68->68 (MLP, {rep.epochs_run} epochs, val NME "
              f"{rep.val_nme_mlp_pct:.2f}% vs linear {rep.val_nme_linear_pct:.2f}%): {t_fit:6.2f} s (target <= 10 s)")
        adapter.to(device)
        t_apply = best(lambda a=adapter: a.predict(big), 3, True) / len(big)
        print(f"[{device}] apply: {1 / t_apply:12,.0f} shapes/s (target >= 100,000)")
    print(f"default device here: {resolve_device('auto')}")


if __name__ == "__main__":
    main()
