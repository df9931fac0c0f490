"""Visual gap: how different two face sets look, from face crops.

Every face is cropped the way the detector sees it (a square around its landmark box, 1.3x,
resized to ``size`` px), so image statistics compare faces, not image sizes or backgrounds.
Features are handcrafted by default (statistics, Lab colour histograms, HOG); a trained gapkit
backbone from a benchmark run can replace them. Nothing downloads weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import wasserstein_distance
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gapkit.augment import to_tensor_batch
from gapkit.crop import crop_face
from gapkit.errors import Problem
from gapkit.gap.label import frechet_distance
from gapkit.records import FaceRecord
from gapkit.train.detector import Detector

STATS = ("brightness", "contrast", "sharpness", "noise", "saturation", "colour_a", "colour_b")
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def face_crops(records: Sequence[FaceRecord], size: int = 64, margin: float = 1.3,
               progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[int], list[Problem]]:
    """(n, size, size, 3) uint8 BGR crops of the faces whose image reads, their indices into
    ``records``, and a Problem for each image that is missing or unreadable."""
    crops, kept, problems = [], [], []
    for i, r in enumerate(records):
        img = cv2.imread(r.image, cv2.IMREAD_COLOR) if Path(r.image).is_file() else None
        if img is None:
            reason = "image file is missing" if not Path(r.image).is_file() else "image cannot be decoded"
            problems.append(Problem(r.image, None, f"{reason} (record {r.id}); left out of the visual gap"))
        else:
            crops.append(crop_face(img, r, size, margin)[0])
            kept.append(i)
        if progress:
            progress(1)
    return (np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)), kept, problems


FLAT_SHARE = 0.3  # the flattest share of pixels that noise_sigma reads


def noise_sigma(grey: np.ndarray) -> float:
    """Sensor-noise sigma (grey levels): Immerkaer's Laplacian-difference estimate read only on the
    flattest 30% of pixels (lowest Sobel gradient). Over the whole crop it counts edges and
    texture as noise, and ranks a clean render above a noisy photo."""
    g = grey.astype(np.float32)
    response = np.abs(cv2.filter2D(g, -1, _NOISE_KERNEL))[1:-1, 1:-1]
    gradient = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))[1:-1, 1:-1]
    flat = gradient <= np.quantile(gradient, FLAT_SHARE)
    return float(math.sqrt(math.pi / 2) / 6 * response[flat].mean())


def image_stats(crop: np.ndarray) -> np.ndarray:
    """(7,) brightness and contrast (mean and sd of grey, 0-255), sharpness (log10 variance of the
    Laplacian), noise (:func:`noise_sigma`), saturation (mean HSV S), colour cast (mean Lab a*, b*
    around neutral)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    noise = noise_sigma(grey)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    return np.array([grey.mean(), grey.std(), math.log10(lap.var() + 1e-6), noise, hsv[..., 1].mean(),
                     lab[..., 1].mean() - 128, lab[..., 2].mean() - 128])


@lru_cache(maxsize=1)
def _hog() -> cv2.HOGDescriptor:
    return cv2.HOGDescriptor((64, 64), (32, 32), (16, 16), (16, 16), 9)


def handcrafted_features(crops: np.ndarray) -> np.ndarray:
    """(n, D) statistics + Lab histograms (8 bins a channel) + HOG of the 64 px grey crop."""
    out = []
    for c in crops:
        lab = cv2.cvtColor(c, cv2.COLOR_BGR2LAB)
        hist = np.concatenate([np.bincount(lab[..., j].ravel() // 32, minlength=8) for j in range(3)]) / lab[..., 0].size
        grey = cv2.cvtColor(cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        out.append(np.concatenate([image_stats(c), hist, _hog().compute(grey).ravel()]))
    return np.asarray(out, float)


def backbone_features(crops: np.ndarray, model: str | Path, device: str = "cpu", batch: int = 128) -> np.ndarray:
    """(n, C) pooled features of a gapkit model file (``.gkm``: `gapkit train`, or the benchmark's models/)."""
    import torch  # deferred: heavy, and only a --backbone report needs it

    net = Detector.load(model).net.to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            out.append(net.features(to_tensor_batch(crops[i:i + batch]).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, net.lat16.in_channels))


def domain_auc(fa: np.ndarray, fb: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated ROC AUC of a logistic-regression domain classifier (0.5: the sets look alike)."""
    if min(len(fa), len(fb)) < folds:
        return float("nan")
    x = np.concatenate([fa, fb])
    y = np.r_[np.zeros(len(fa)), np.ones(len(fb))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def feature_frechet(fa: np.ndarray, fb: np.ndarray, seed: int = 0, dims: int = 32) -> float:
    """Fréchet distance between the two sets in a shared standardised PCA space."""
    x = StandardScaler().fit_transform(np.concatenate([fa, fb]))
    n = min(dims, x.shape[1], len(x) - 1)
    z = PCA(n_components=n, random_state=seed).fit_transform(x)
    return frechet_distance(z[:len(fa)], z[len(fa):])


def visual_gap(stats_a: np.ndarray, stats_b: np.ndarray, feats_a: np.ndarray, feats_b: np.ndarray,
               features: str, seed: int = 0) -> dict:
    """Per-statistic Wasserstein distances (also in pooled-sd units), domain AUC and Fréchet distance."""
    out: dict = {"features": features, "n_a": len(feats_a), "n_b": len(feats_b), "stats": {}}
    for j, name in enumerate(STATS):
        a, b = stats_a[:, j], stats_b[:, j]
        sd = float(np.concatenate([a, b]).std()) or 1.0
        out["stats"][name] = {"a_mean": float(a.mean()), "b_mean": float(b.mean()),
                              "wasserstein": float(wasserstein_distance(a, b)),
                              "wasserstein_sd": float(wasserstein_distance(a, b) / sd)}
    out["domain_auc"] = domain_auc(feats_a, feats_b, seed)
    out["frechet"] = feature_frechet(feats_a, feats_b, seed) if min(len(feats_a), len(feats_b)) > 2 else float("nan")
    return out
