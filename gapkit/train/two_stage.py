"""A detector's second stage: stage 1's points refined on the image around them.

Stage 1 is the crop net trained as usual. The refiner learns to move stage-1 predictions of the
training faces to their labels, from one of two kinds of start (``TwoStage.starts``; "auto"
picks by the number of faces, :func:`starts_kind`):

- ``own``: stage 1's predictions of the faces it trained on. They are closer to the labels than
  its predictions of new faces, so the refiner's jitter widens them; no extra model is trained.
- ``out_of_fold``: the faces of each source are split into ``folds``, and a stage-1 model
  trained without a fold (same settings, ``fold_share`` of the steps) predicts that fold, so
  the starts carry the errors of unseen faces, at ``folds x fold_share`` of stage 1's time.

On the 300-W pool's validation split (benchmarks/two_stage_settings.py), at equal training time
``own`` with more refiner steps beat ``out_of_fold`` with 1,475 faces; with 226, stage 1 knew
its own faces so well that a refiner trained from its points did not beat it on held-out ones.

The refiner is the one the label adapter's second stage uses (:func:`gapkit.refine.fit`): it
reads each face's image around the starts, learns to move them to the labels, and is kept only
where it beats them on held-out faces (10% of the faces, or k-fold CV below ``small_data``).
Points are 0-based image pixels (x, y), (N, K, 2).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from gapkit.align import generalised_procrustes
from gapkit.devices import resolve_device
from gapkit.errors import ConfigError
from gapkit.refine import Refiner, RefineReport
from gapkit.refine import fit as fit_refiner
from gapkit.train.data import Source
from gapkit.train.trainer import TrainConfig, TwoStage, predict, train

Log = Callable[[str], None]


def _folds(sources: Sequence[Source], k: int, seed: int) -> list[list[np.ndarray]]:
    """Per source, its face indices in ``k`` random folds."""
    rng = np.random.default_rng(seed + 11)
    small = [len(s.crops) for s in sources if len(s.crops) < 2 * k]
    if small:
        raise ConfigError(f"a two-stage detector needs at least {2 * k} faces in each training source "
                          f"({k} folds), got {small[0]}")
    return [[np.sort(f) for f in np.array_split(rng.permutation(len(s.crops)), k)] for s in sources]


def fold_config(cfg: TrainConfig) -> TrainConfig:
    """The settings of a fold model: stage 1's with ``fold_share`` of its steps and budget."""
    share = cfg.refine.fold_share
    return cfg.model_copy(update={"steps": max(1, round(cfg.steps * share)), "refine": None,
                                  "budget_s": cfg.budget_s * share if cfg.budget_s else None})


def out_of_fold(sources: Sequence[Source], cfg: TrainConfig, init: dict | None = None, log: Log = lambda s: None,
                progress: Callable[[int, int, float], None] | None = None) -> list[np.ndarray]:
    """Per source, image points (N_s, K, 2) of every face, each predicted by a stage-1 model that
    was trained (from ``init``, as stage 1 is) without its fold."""
    k = cfg.refine.folds
    folds = _folds(sources, k, cfg.seed)
    fcfg = fold_config(cfg)
    device = resolve_device(cfg.device)
    out = [np.full((len(s.crops), s.crops.scheme.num_points, 2), np.nan) for s in sources]
    for f in range(k):
        log(f"stage 1 without fold {f + 1} of {k} ({fcfg.steps} steps)")
        keep = [Source(s.crops.subset(np.concatenate([p for j, p in enumerate(parts) if j != f])), s.share)
                for s, parts in zip(sources, folds, strict=True)]
        model = train(keep, fcfg, init=init, progress=progress)
        for s, parts, o in zip(sources, folds, out, strict=True):
            o[parts[f]] = predict(model, s.crops.subset(parts[f]), device=device, flip=cfg.flip_test)
    return out


def mean_shape(points: np.ndarray) -> np.ndarray:
    """The Procrustes mean (K, 2) of the faces with every point labelled (all faces if none is)."""
    whole = points[~np.isnan(points).any(axis=(1, 2))]
    return generalised_procrustes(whole if len(whole) else points)[0]


def starts_kind(two: TwoStage, n: int) -> str:
    """"own" or "out_of_fold": the refiner's starts for ``n`` training faces (``two.starts``
    unless it is "auto")."""
    if two.starts != "auto":
        return two.starts
    return "own" if n >= two.own_from else "out_of_fold"


def training_starts(sources: Sequence[Source], cfg: TrainConfig, stage1=None, init: dict | None = None,
                    log: Log = lambda s: None, progress: Callable[[int, int, float], None] | None = None
                    ) -> np.ndarray:
    """Image points (N, K, 2) of every face of ``sources`` in order, the refiner's starts as
    ``cfg.refine`` says (:func:`starts_kind`): the trained ``stage1`` net's predictions, or out-of-fold ones."""
    if starts_kind(cfg.refine, sum(len(s.crops) for s in sources)) == "out_of_fold":
        return np.concatenate(out_of_fold(sources, cfg, init, log, progress))
    if stage1 is None:
        raise ConfigError("a second stage trained from stage 1's own predictions needs the trained stage 1")
    device = resolve_device(cfg.device)
    return np.concatenate([predict(stage1, s.crops, device=device, flip=cfg.flip_test) for s in sources])


def fit_second_stage(sources: Sequence[Source], cfg: TrainConfig, stage1=None, init: dict | None = None,
                     log: Log = lambda s: None, progress: Callable[[int, int], None] | None = None,
                     stage1_progress: Callable[[int, int, float], None] | None = None
                     ) -> tuple[Refiner | None, RefineReport]:
    """The refiner of a two-stage detector trained with ``cfg`` (``cfg.refine`` set) on
    ``sources`` after its first stage ``stage1`` (the trained net; only "own" starts read it),
    or None where validation says it does not help, and its report. Each face's image is read
    from its file; faces whose image cannot be read are left out and reported."""
    if cfg.refine is None:
        raise ConfigError("fit_second_stage needs TrainConfig.refine")
    start = time.perf_counter()
    oof = training_starts(sources, cfg, stage1, init, log, stage1_progress)
    target = np.concatenate([s.crops.to_image(np.arange(len(s.crops)), s.crops.points) for s in sources])
    images = [p for s in sources for p in s.crops.paths]
    ids = [i for s in sources for i in s.crops.ids]
    scheme = sources[0].crops.scheme
    rcfg = cfg.refine.refiner.model_copy(update={"seed": cfg.seed, "device": cfg.device})
    log(f"image refinement on {len(images)} faces ({rcfg.method})")
    refiner, rep = fit_refiner(images, oof, target, mean_shape(target), scheme, scheme.default_normaliser, rcfg,
                               resolve_device(cfg.device), ids, progress)
    rep.fit_s = round(time.perf_counter() - start, 1)
    return refiner, rep
