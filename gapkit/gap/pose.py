"""Pose gap: where the yaw, pitch and roll of set A fail to cover those of set B."""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from gapkit.gap.label import CALIPER_DEG, pose_matches

ANGLES = ("yaw", "pitch", "roll")
BIN_DEG = 10.0


def pose_gap(pose_a: np.ndarray, pose_b: np.ndarray) -> dict:
    """Per-angle Wasserstein-1 distances (degrees), summaries, the share of B faces with an A
    face within the caliper in (yaw, pitch), and the yaw bins where A is thin against B."""
    out: dict = {"angles": {}, "caliper_deg": CALIPER_DEG}
    for j, name in enumerate(ANGLES):
        a, b = pose_a[:, j], pose_b[:, j]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) == 0 or len(b) == 0:
            out["angles"][name] = None
            continue
        out["angles"][name] = {
            "wasserstein_deg": float(wasserstein_distance(a, b)),
            "a": {"mean": float(a.mean()), "sd": float(a.std()), "p5": float(np.percentile(a, 5)),
                  "p95": float(np.percentile(a, 95))},
            "b": {"mean": float(b.mean()), "sd": float(b.std()), "p5": float(np.percentile(b, 5)),
                  "p95": float(np.percentile(b, 95))},
        }
    out["unknown_a"] = int(np.isnan(pose_a).any(1).sum())
    out["unknown_b"] = int(np.isnan(pose_b).any(1).sum())
    out["covered_share"] = len(pose_matches(pose_a, pose_b)[0]) / max(len(pose_b), 1)
    ya, yb = pose_a[:, 0], pose_b[:, 0]
    ya, yb = ya[~np.isnan(ya)], yb[~np.isnan(yb)]
    edges = np.arange(-90.0, 90.0 + BIN_DEG, BIN_DEG)
    thin = []
    if len(ya) and len(yb):
        ha = np.histogram(ya, edges)[0] / len(ya)
        hb = np.histogram(yb, edges)[0] / len(yb)
        for lo, sa, sb in zip(edges[:-1], ha, hb, strict=True):
            if sb >= 0.02 and sa < sb / 3:
                thin.append({"yaw_from": float(lo), "yaw_to": float(lo + BIN_DEG), "share_a": float(sa),
                             "share_b": float(sb)})
    out["thin_yaw_bins"] = thin
    return out
