"""Label gap: how two sets of shapes of one scheme disagree, after Procrustes alignment.

Shapes are aligned on the points off the face outline (the scheme's ``outline`` groups are
left out of the fit), so a moved jaw shows on the jaw. Offsets are in percent of the reference's normalising distance (inter-ocular for iBUG-68),
as ``A - B`` (A typically synthetic, B real). Two face sets differ in pose as well as in
labelling convention, and a mean shape depends on pose (a yawed face looks narrower), so the
headline offsets are *pose-matched*: every B face is compared with the mean of the A faces of
nearly the same yaw and pitch. That average runs over B's faces, so it is the gap *under B's
pose mix*; the same is measured the other way (each A face against its B neighbours: *under
A's pose mix*) and per yaw bin, each with its interval, because a gap that grows with yaw reads
differently under different mixes. The unmatched difference of means is reported beside it.
Shape modes are computed after the pose is regressed out of each set's aligned shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import linalg
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from gapkit.align import generalised_procrustes, procrustes
from gapkit.metrics import normaliser
from gapkit.schemes import LandmarkScheme

CALIPER_DEG = 10.0   # a B face is matched when some A face lies this close in (yaw, pitch)
NEIGHBOURS = 8
YAW_BINS = (-90.0, -30.0, -10.0, 10.0, 30.0, 90.0)  # degrees; per-bin gaps
MIN_BIN_FACES = 5


@dataclass
class LabelGap:
    """All numbers in percent of the normaliser unless named otherwise."""

    scheme: str
    normaliser: str
    n_a: int
    n_b: int
    reference: np.ndarray          # (K, 2) B's mean shape, unit normaliser, y down
    offsets: np.ndarray            # (K, 2) pose-matched mean A - B
    raw_offsets: np.ndarray        # (K, 2) mean A - mean B, no pose matching
    mean_pct: float                # mean over points of |offsets| (biased upwards by noise)
    estimate_pct: float            # bias-corrected mean_pct (2 mean_pct - mean of the bootstraps, >= 0)
    ci95: tuple[float, float]      # basic bootstrap over B faces (bias-corrected, clipped at 0); holds estimate_pct
    noise_floor: float             # 95th percentile of mean_pct when no offset exists (sign flips)
    raw_mean_pct: float
    matched_share: float           # B faces with an A face within the caliper
    groups: dict[str, float]
    frechet: float                 # between aligned-shape distributions, pose removed (PCA space, % units squared)
    mmd: float                     # squared MMD, RBF kernel, median bandwidth
    mmd_p: float                   # permutation p-value
    modes: list[dict] = field(default_factory=list)
    weighting: str = "B"           # the headline's pose mix: averaged over B's matched faces
    by_mix: dict = field(default_factory=dict)     # {"B": {...}, "A": {...}}: estimate, CI, floor, groups
    pose_bins: list[dict] = field(default_factory=list)  # per yaw bin of the anchor face, both mixes
    point_names: list[str] = field(default_factory=list)

    @property
    def magnitude(self) -> np.ndarray:
        return np.linalg.norm(self.offsets, axis=1)

    def to_dict(self) -> dict:
        mag = self.magnitude
        order = np.argsort(-mag)
        return {
            "scheme": self.scheme, "normaliser": self.normaliser, "n_a": self.n_a, "n_b": self.n_b,
            "mean_pct": self.mean_pct, "estimate_pct": self.estimate_pct, "ci95_pct": list(self.ci95), "noise_floor_pct": self.noise_floor, "raw_mean_pct": self.raw_mean_pct,
            "max_pct": float(mag.max()), "matched_share": self.matched_share, "groups_pct": self.groups,
            "largest_points": [int(i) for i in order[:10]],
            "largest_point_names": [self.point_names[i] for i in order[:10]] if self.point_names else [],
            "weighting": self.weighting, "by_pose_mix": self.by_mix, "pose_bins": self.pose_bins,
            "per_point_pct": [[round(float(x), 4), round(float(y), 4)] for x, y in self.offsets],
            "raw_per_point_pct": [[round(float(x), 4), round(float(y), 4)] for x, y in self.raw_offsets],
            "frechet": self.frechet, "mmd2": self.mmd, "mmd_p": self.mmd_p, "modes": self.modes,
        }


def alignment_weights(scheme: LandmarkScheme) -> np.ndarray | None:
    """(K,) weights that leave the outline out of the alignment, so that an outline which
    moves does not drag the eyes and mouth with it; None (all points) when nothing is left."""
    inner = scheme.inner_points
    if len(inner) == scheme.num_points or len(inner) < 3:
        return None
    w = np.zeros(scheme.num_points)
    w[inner] = 1.0
    return w


def aligned_shapes(shapes: np.ndarray, reference: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(N, K, 2) shapes moved onto ``reference`` by similarity Procrustes (NaN points left out)."""
    return procrustes(shapes, reference, weights).apply(shapes)


def reference_shape(shapes: np.ndarray, scheme: LandmarkScheme, name: str) -> np.ndarray:
    """GPA mean of ``shapes`` (aligned on the inner points) scaled to a unit normalising distance."""
    mean, _ = generalised_procrustes(shapes, alignment_weights(scheme))
    d = float(normaliser(mean[None], scheme, name)[0])
    return mean / d


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two (n, d) samples."""
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(ca @ cb)
    root = root.real if np.iscomplexobj(root) else root
    return float(max(mu @ mu + np.trace(ca + cb - 2 * root), 0.0))


def mmd_test(a: np.ndarray, b: np.ndarray, permutations: int = 200, seed: int = 0,
             max_per_side: int = 600) -> tuple[float, float]:
    """Squared MMD (biased, RBF kernel, median-distance bandwidth) and a permutation p-value."""
    rng = np.random.default_rng(seed)
    a = a[rng.permutation(len(a))[:max_per_side]]
    b = b[rng.permutation(len(b))[:max_per_side]]
    x = np.concatenate([a, b])
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    bandwidth = np.median(sq[np.triu_indices(len(x), 1)])
    k = np.exp(-sq / max(bandwidth, 1e-12))
    n = len(a)

    def stat(lab: np.ndarray) -> float:
        ia, ib = np.flatnonzero(lab), np.flatnonzero(~lab)
        return float(k[np.ix_(ia, ia)].mean() + k[np.ix_(ib, ib)].mean() - 2 * k[np.ix_(ia, ib)].mean())

    lab = np.zeros(len(x), bool)
    lab[:n] = True
    observed = stat(lab)
    null = [stat(rng.permutation(lab)) for _ in range(permutations)]
    return observed, float((1 + sum(v >= observed for v in null)) / (1 + permutations))


def pose_matches(pose_a: np.ndarray, pose_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each B face, up to NEIGHBOURS A faces within CALIPER_DEG in (yaw, pitch).

    Returns (matched B rows (M,), A rows (M, n), weights (M, n) summing to 1 per row).
    Faces with an unknown pose are never matched.
    """
    ok_a = np.flatnonzero(~np.isnan(pose_a[:, :2]).any(1))
    ok_b = np.flatnonzero(~np.isnan(pose_b[:, :2]).any(1))
    if len(ok_a) == 0 or len(ok_b) == 0:
        return np.zeros(0, int), np.zeros((0, 1), int), np.zeros((0, 1))
    nn = NearestNeighbors(n_neighbors=min(NEIGHBOURS, len(ok_a))).fit(pose_a[ok_a, :2])
    dist, idx = nn.kneighbors(pose_b[ok_b, :2])
    close = dist <= CALIPER_DEG  # neighbours past the caliper do not count
    matched = close[:, 0]
    w = close[matched].astype(float)
    return ok_b[matched], ok_a[idx[matched]], w / w.sum(1, keepdims=True)


def _matched_diffs(al_a: np.ndarray, al_b: np.ndarray, match: tuple, pose_a: np.ndarray | None = None,
                   pose_b: np.ndarray | None = None) -> np.ndarray:
    """(M, K, 2): for each matched B face, the mean of its pose neighbours in A minus itself.

    With the poses, the neighbours' mean is moved to the B face's own pose by A's shape-on-pose
    regression (the bias-corrected matching of Abadie and Imbens): neighbours up to the caliper
    away sit, where A is dense and B thin, on the side of B's bulk, and would bias the gap there."""
    b_rows, a_rows, w = match
    neigh = np.einsum("nj,njkd->nkd", w, al_a[a_rows])
    beta = _pose_fit(al_a, pose_a) if pose_a is not None and len(b_rows) else None
    if beta is not None:
        gap = pose_design(pose_b[b_rows]) - np.einsum("nj,njf->nf", w, pose_design(pose_a[a_rows].reshape(-1, 3))
                                                      .reshape(*a_rows.shape, -1))
        neigh = neigh + (gap @ beta).reshape(neigh.shape)
    return neigh - al_b[b_rows]


def _pose_fit(al: np.ndarray, pose: np.ndarray) -> np.ndarray | None:
    """(7, K * 2) least-squares coefficients of aligned shapes on :func:`pose_design`, from the
    faces with a known pose and every point; None with too few of them."""
    ok = ~np.isnan(pose).any(1) & ~np.isnan(al).reshape(len(al), -1).any(1)
    if ok.sum() < 30:
        return None
    beta, *_ = np.linalg.lstsq(pose_design(pose[ok]), al[ok].reshape(int(ok.sum()), -1), rcond=None)
    return beta


def _summary(diffs: np.ndarray, seed: int, scheme: LandmarkScheme, share: float) -> dict:
    """Estimate, CI, noise floor and per-group offsets of (M, K, 2) per-face differences."""
    if len(diffs) < 2:
        return {"n": len(diffs), "matched_share": share, "estimate_pct": None, "ci95_pct": [None, None],
                "noise_floor_pct": None, "groups_pct": {}}
    est, ci, floor = _uncertainty(diffs, seed)
    mag = np.linalg.norm(np.nanmean(diffs, 0), axis=1)
    return {"n": len(diffs), "matched_share": share, "estimate_pct": est, "ci95_pct": list(ci),
            "noise_floor_pct": floor, "groups_pct": {g: float(mag[i].mean()) for g, i in scheme.groups.items()}}


def _pose_bins(diffs_b: np.ndarray, yaw_b: np.ndarray, diffs_a: np.ndarray, yaw_a: np.ndarray, seed: int,
               scheme: LandmarkScheme) -> list[dict]:
    """The gap per yaw bin of the anchor face, under each mix (B's faces, A's faces)."""
    out = []
    for lo, hi in zip(YAW_BINS[:-1], YAW_BINS[1:], strict=True):
        row: dict = {"yaw_from": lo, "yaw_to": hi}
        for side, d, yaw in (("B", diffs_b, yaw_b), ("A", diffs_a, yaw_a)):
            inside = (yaw >= lo) & (yaw < hi)
            sub = d[inside]
            row[side] = _summary(sub, seed, scheme, float(inside.mean()) if len(yaw) else 0.0) \
                if len(sub) >= MIN_BIN_FACES else {"n": int(len(sub)), "estimate_pct": None, "ci95_pct": [None, None]}
        out.append(row)
    return out


def pose_design(pose: np.ndarray) -> np.ndarray:
    """(N, 7) regressors of head pose: 1, yaw, pitch, roll, yaw², pitch², yaw·pitch (degrees / 30)."""
    y, p, r = (pose[:, j] / 30.0 for j in range(3))
    return np.stack([np.ones_like(y), y, p, r, y * y, p * p, y * p], 1)


def remove_pose(flat: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(N, D) shapes with what the pose explains (least squares on :func:`pose_design`, fitted on
    these faces) taken out; the mean is kept. Rows with an unknown pose are left as they are."""
    ok = ~np.isnan(pose).any(1)
    out = flat.copy()
    if ok.sum() > 10:
        x = pose_design(pose[ok])
        beta, *_ = np.linalg.lstsq(x, flat[ok], rcond=None)
        out[ok] = flat[ok] - x[:, 1:] @ beta[1:]
    return out


def _uncertainty(diffs: np.ndarray, seed: int, reps: int = 200) -> tuple[float, tuple[float, float], float]:
    """Bias-corrected estimate, bootstrap CI and noise floor of the mean offset length over
    (M, K, 2) per-face differences.

    A length is biased upwards by noise (|mean| > 0 even when the true offset is 0), so the CI is
    the basic (bias-corrected) bootstrap interval, and the noise floor is what the statistic
    reaches when each face's difference is sign-flipped at random, i.e. with no offset at all.
    The estimate is corrected the same way (2 theta - mean of the bootstraps), so it lies in its CI.
    """
    rng = np.random.default_rng(seed)

    def stat(d: np.ndarray) -> float:
        return float(np.linalg.norm(np.nanmean(d, 0), axis=1).mean())

    theta = stat(diffs)
    boots = [stat(diffs[rng.integers(0, len(diffs), len(diffs))]) for _ in range(reps)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    null = [stat(diffs * rng.choice([-1.0, 1.0], len(diffs))[:, None, None]) for _ in range(reps)]
    ci = (max(0.0, 2 * theta - float(hi)), max(0.0, 2 * theta - float(lo)))
    estimate = float(np.clip(2 * theta - float(np.mean(boots)), *ci))
    return estimate, ci, float(np.percentile(null, 95))


def _robust_alignment(a: np.ndarray, b: np.ndarray, ref: np.ndarray, scheme: LandmarkScheme, match: tuple,
                      pose_a: np.ndarray, pose_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` aligned onto ``ref`` (x 100: percent of the normaliser) on the inner points,
    re-weighted three times by how well the sets agree there (Cauchy weights, see :func:`label_gap`)."""
    base = alignment_weights(scheme)
    w = base
    for _ in range(3):
        al_a, al_b = aligned_shapes(a, ref, w) * 100, aligned_shapes(b, ref, w) * 100
        if len(match[0]) < 2:
            break
        mag = np.linalg.norm(np.nanmean(_matched_diffs(al_a, al_b, match, pose_a, pose_b), 0), axis=1)
        inner = base > 0 if base is not None else np.ones(len(mag), bool)
        c = max(float(np.nanmedian(mag[inner])), 0.25)
        w = (1.0 if base is None else base) / (1.0 + (np.nan_to_num(mag, nan=0.0) / c) ** 2)
    return al_a, al_b


def _shape_modes(al_a: np.ndarray, al_b: np.ndarray, ref: np.ndarray, pose_a: np.ndarray, pose_b: np.ndarray,
                 seed: int) -> tuple[float, float, float, list[dict]]:
    """Fréchet distance, squared MMD and its p-value between the aligned shapes (pose removed, PCA
    space), and the shape modes, the most separating first."""
    flat_a = np.nan_to_num(al_a.reshape(len(al_a), -1) - ref.reshape(-1) * 100)
    flat_b = np.nan_to_num(al_b.reshape(len(al_b), -1) - ref.reshape(-1) * 100)
    pooled_pose = np.concatenate([pose_a, pose_b])
    # Pose out first, within each set (their shapes follow pose differently where the label gap
    # grows with yaw), or the leading modes are yaw and pitch. What varies with pose is in the
    # per-yaw-bin gaps instead.
    pooled = np.concatenate([remove_pose(flat_a, pose_a), remove_pose(flat_b, pose_b)])
    pca = PCA(n_components=min(20, pooled.shape[1], len(pooled) - 1), random_state=seed).fit(pooled)
    z = pca.transform(pooled)
    za, zb = z[:len(al_a)], z[len(al_a):]
    fd = frechet_distance(za, zb)
    mmd, p = mmd_test(za, zb, seed=seed)
    yaw = pooled_pose[:, 0]
    known = ~np.isnan(yaw)
    modes = []
    for j in range(min(10, pca.n_components_)):
        sd = np.sqrt(pca.explained_variance_[j])
        d = (za[:, j].mean() - zb[:, j].mean()) / sd
        r = float(np.corrcoef(z[known, j], yaw[known])[0, 1]) if known.sum() > 2 else float("nan")
        modes.append({"mode": j, "explained": float(pca.explained_variance_ratio_[j]), "effect_size": float(d),
                      "direction": pca.components_[j].reshape(-1, 2).tolist(), "sd_pct": float(sd),
                      "yaw_r": r, "pose_removed": True})
    modes.sort(key=lambda m: -abs(m["effect_size"]))
    return fd, mmd, p, modes


def label_gap(a: np.ndarray, b: np.ndarray, scheme: LandmarkScheme, pose_a: np.ndarray, pose_b: np.ndarray,
              name: str | None = None, reference: np.ndarray | None = None, seed: int = 0) -> LabelGap:
    """Label gap between (Na, K, 2) shapes ``a`` and (Nb, K, 2) shapes ``b`` of ``scheme``.

    ``pose_a``/``pose_b``: (N, 3) yaw, pitch, roll in degrees (NaN = unknown; such faces are
    left out of the matching but kept in the unmatched numbers). ``reference`` fixes the frame
    (to compare a before/after pair on one picture); by default B's own mean shape.

    The frame is robust: after a first fit on the inner points, points are re-weighted by how
    well the two sets agree there (Cauchy weights), so that a convention that moves a few
    points (the brows' upper edge against their mid-line) does not shift the others.
    """
    name = name or scheme.default_normaliser
    ref = reference_shape(b, scheme, name) if reference is None else reference
    match = pose_matches(pose_a, pose_b)
    al_a, al_b = _robust_alignment(a, b, ref, scheme, match, pose_a, pose_b)
    raw = np.nanmean(al_a, 0) - np.nanmean(al_b, 0)
    diffs = _matched_diffs(al_a, al_b, match, pose_a, pose_b)
    # The other mix: each A face against the mean of its B pose neighbours.
    match_a = pose_matches(pose_b, pose_a)
    diffs_a = -_matched_diffs(al_b, al_a, match_a, pose_b, pose_a)
    by_mix = {"B": _summary(diffs, seed, scheme, len(diffs) / len(b)),
              "A": _summary(diffs_a, seed, scheme, len(diffs_a) / len(a))}
    if len(diffs) < 2:
        offsets = np.full_like(raw, np.nan)
        est, ci, floor = float("nan"), (float("nan"), float("nan")), float("nan")
    else:  # the headline is B's mix
        offsets = np.nanmean(diffs, 0)
        est, ci, floor = by_mix["B"]["estimate_pct"], tuple(by_mix["B"]["ci95_pct"]), by_mix["B"]["noise_floor_pct"]
    mag = np.linalg.norm(offsets, axis=1)
    bins = _pose_bins(diffs, pose_b[match[0], 0], diffs_a, pose_a[match_a[0], 0], seed, scheme)
    fd, mmd, p, modes = _shape_modes(al_a, al_b, ref, pose_a, pose_b, seed)
    return LabelGap(
        scheme=scheme.name, normaliser=name, n_a=len(a), n_b=len(b), reference=ref, offsets=offsets,
        raw_offsets=raw, mean_pct=float(mag.mean()), estimate_pct=est, ci95=ci, noise_floor=floor,
        raw_mean_pct=float(np.linalg.norm(raw, axis=1).mean()), matched_share=len(diffs) / len(b),
        groups={g: float(mag[i].mean()) for g, i in scheme.groups.items()},
        frechet=fd, mmd=mmd, mmd_p=p, modes=modes[:3], by_mix=by_mix, pose_bins=bins,
        point_names=list(scheme.points),
    )
