"""Fitting an image refinement stage: which kind, and whether it is kept at all.

A map from shapes to shapes cannot see where the source detector was locally wrong; a refiner
reads the image. Training triples are (image, initial points, target points). The initial
points should be out-of-fold shape-adapter predictions (``LabelAdapter.fit_images`` makes
them), so that the refiner learns from errors the adapter makes on faces it has not seen.

The CNN (:mod:`gapkit.refine.cnn`) needs hundreds of faces. Below ``small_data`` pairs the
default (``method="auto"``) fits the descriptor cascade (:mod:`gapkit.refine.cascade`)
instead; from there it trains both and keeps the one that does better on held-out faces.
Either is kept only where it beats shape-only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gapkit.errors import AdapterError, Problem
from gapkit.metrics import nme
from gapkit.refine.base import ImageRefiner
from gapkit.refine.config import RefineConfig, RefineReport
from gapkit.refine.frame import frame_matrices, read_crops, reference_frame, to_frame
from gapkit.refine.refiner import Refiner, refiner_kind
from gapkit.schemes import LandmarkScheme


@dataclass
class _View:
    """The faces as one kind sees them: its reference frame (K, 2), prepared crops, and the
    initial and target points (N, K, 2) in the frame."""

    ref: np.ndarray
    crops: np.ndarray
    init: np.ndarray
    target: np.ndarray


class _Progress:
    """Work units done of ``total``, reported to ``progress`` as they come."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None):
        self.done, self.total, self.progress = 0, total, progress

    def tick(self, k: int) -> None:
        self.done += k
        if self.progress:
            self.progress(self.done, self.total)


def _kinds(cfg: RefineConfig, n: int) -> list[type[ImageRefiner]]:
    """The kinds to try: ``auto`` is the cascade alone below ``small_data`` faces, else both."""
    if cfg.method == "auto":
        return [refiner_kind(m) for m in (["cascade"] if n < cfg.small_data else ["cascade", "cnn"])]
    return [refiner_kind(cfg.method)]


def _views(images: list[str], init: np.ndarray, target: np.ndarray, mean_target: np.ndarray,
           kinds: list[type[ImageRefiner]], cfg: RefineConfig,
           ids: list[str] | None) -> tuple[dict[str, _View], dict[int, Problem]]:
    """Each kind's view of the faces with a readable image (each image read once), and the
    problems of the others."""
    refs = [reference_frame(mean_target, k.crop_size(cfg)) for k in kinds]
    mats = [frame_matrices(init, ref) for ref in refs]
    crops, bad = read_crops(images, [(mat, k.crop_size(cfg)) for k, mat in zip(kinds, mats, strict=True)], ids)
    ok = np.setdiff1d(np.arange(len(images)), list(bad))
    if len(ok) < 10:
        raise AdapterError(f"only {len(ok)} of {len(images)} pairs have a readable image; "
                           "an image refinement needs 10")
    views = {k.name: _View(ref, k.prepare(c[ok]), to_frame(mat[ok], init[ok]), to_frame(mat[ok], target[ok]))
             for k, ref, mat, c in zip(kinds, refs, mats, crops, strict=True)}
    return views, bad


def _splits(n: int, cfg: RefineConfig) -> tuple[str, list[np.ndarray]]:
    """How refined and shape-only are compared, and the held-out faces of each split: k folds
    below ``small_data`` faces, else one ``val_frac`` held out."""
    rng = np.random.default_rng(cfg.seed + 7)
    if n < cfg.small_data:
        return f"{cfg.folds}-fold cv", [np.sort(v) for v in np.array_split(rng.permutation(n), cfg.folds)]
    return f"{cfg.val_frac:.0%} held out", [np.sort(rng.permutation(n)[:max(1, int(round(cfg.val_frac * n)))])]


def _crop_nme(pred: np.ndarray, target: np.ndarray, scheme: LandmarkScheme, normaliser: str) -> np.ndarray:
    return 100 * nme(pred, target, scheme, normaliser)


def fit(images: list[str], init: np.ndarray, target: np.ndarray, mean_target: np.ndarray, scheme: LandmarkScheme,
        normaliser: str, cfg: RefineConfig, device: str, ids: list[str] | None = None,
        progress: Callable[[int, int], None] | None = None) -> tuple[Refiner | None, RefineReport]:
    """Train a refiner on faces ``images[i]`` with initial and target image points (N, K, 2), and
    keep it only where it beats the initial points on faces it did not see: k-fold CV below
    ``cfg.small_data`` faces (then a final fit on all), else one held-out ``cfg.val_frac``. With
    ``method="auto"`` that is the descriptor cascade alone below ``small_data``, and from there
    both kinds, the better one on the held-out faces kept (a CNN as trained without them, a
    cascade refitted on all). Faces whose image cannot be read are left out and reported."""
    kinds = _kinds(cfg, len(images))
    views, bad = _views(images, init, target, mean_target, kinds, cfg, ids)
    n = len(views[kinds[0].name].init)
    cfg = cfg.model_copy(update={"steps": min(cfg.steps, max(200, math.ceil(cfg.epochs * n / cfg.batch_size)))})
    small = n < cfg.small_data
    how, splits = _splits(n, cfg)
    work = _Progress(sum(k.work(cfg) * (len(splits) + (1 if small or k.refit_on_all else 0)) for k in kinds),
                     progress)
    first = views[kinds[0].name]
    shape_err = np.concatenate([_crop_nme(first.init[v], first.target[v], scheme, normaliser) for v in splits])
    scores, kept = {}, {}
    for kind in kinds:
        scores[kind.name], kept[kind.name] = _validate(kind, views[kind.name], splits, cfg, scheme, normaliser,
                                                       device, work.tick)
    s = float(np.nanmean(shape_err))
    best = min(scores, key=scores.get)
    rep = RefineReport(used=scores[best] < s, n_pairs=n, how=how, shape_nme_pct=s, refined_nme_pct=scores[best],
                       steps=cfg.steps, method=best, candidates={k: round(v, 4) for k, v in scores.items()},
                       problems=list(bad.values()))
    if not rep.used:
        return None, rep
    state = kept[best].state
    kind, view = refiner_kind(best), views[best]
    if small or kind.refit_on_all:
        state = kind.train(view.crops, view.init, view.target, cfg, scheme, device, work.tick).state
    return Refiner(cfg, view.ref, scheme, state, best), rep


def _validate(kind: type[ImageRefiner], view: _View, splits: list[np.ndarray], cfg: RefineConfig,
              scheme: LandmarkScheme, normaliser: str, device: str,
              tick: Callable[[int], None]) -> tuple[float, ImageRefiner]:
    """A kind's NME (%) on the held-out faces of every split, each trained without them, and the
    last split's refiner."""
    errs = []
    for val in splits:
        idx = np.setdiff1d(np.arange(len(view.init)), val)
        model = kind.train(view.crops[idx], view.init[idx], view.target[idx], cfg, scheme, device, tick)
        errs.append(_crop_nme(model.run(view.crops[val], view.init[val]), view.target[val], scheme, normaliser))
    return float(np.nanmean(np.concatenate(errs))), model
