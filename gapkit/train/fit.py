"""Train the benchmark's detector real-only on given data sets into one model file
(:func:`fit_detector`); it resumes from its checkpoint and never replaces an existing model
file unless told to. One of the benchmark's strategies on a bench.toml's data sections is
:func:`gapkit.bench.fit.fit_strategy`, which calibrates its box with :func:`calibrate_boxes`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from gapkit.detect import BoxCalibration, build_detector, calibrate
from gapkit.errors import ConfigError, GapkitError
from gapkit.faceset import DataSource, load
from gapkit.files import check_output
from gapkit.records import FaceRecord
from gapkit.refine import Refiner, RefineReport
from gapkit.train.data import FaceCrops, Source
from gapkit.train.detector import Detector, trained_detector
from gapkit.train.trainer import TrainConfig, TwoStage, train
from gapkit.train.two_stage import fit_second_stage, starts_kind

Log = Callable[[str], None]
Progress = Callable[[int, int], None]

# The detector that benchmarks/detector_vs_ert.py measures against dlib's ERT (settings chosen on
# a validation split of the 300-W training pool; see examples/bench-300w.toml), with the steps
# that reach its 1,675-face result in about five minutes on two cores.
DETECTOR = dict(steps=8000, batch_size=16, size=64, width=16, lr=4e-3, heatmap_loss=0.5, flip_test=True,
                augment=dict(rotate=10.0, blur=0.0, noise=0.0, jpeg=0.0, grey=0.0))


def detector_config(**changes: object) -> TrainConfig:
    """The default detector's TrainConfig with ``changes`` (None values ignored)."""
    return TrainConfig(**(DETECTOR | {k: v for k, v in changes.items() if v is not None}))


def two_stage_settings(options: dict) -> TwoStage:
    """The second stage's settings from flat KEY=VALUE options: ``starts``, ``own_from``,
    ``folds`` and ``fold_share`` of :class:`TwoStage`, any other key a :class:`gapkit.refine.RefineConfig`
    setting of its refiner (the rest as :class:`TwoStage` says)."""
    own = {k: options[k] for k in ("starts", "own_from", "folds", "fold_share") if k in options}
    refiner = {k: v for k, v in options.items() if k not in own}
    return TwoStage(**own, refiner=refiner)


def calibrate_boxes(records: Sequence[FaceRecord], log: Log,
                    face_detector: str | None = None) -> tuple[BoxCalibration | None, str | None]:
    """The box calibration of the face detector ``face_detector`` names (the default one for None)
    on up to 400 of the training faces, and the detector's name; (None, None) where too few are found."""
    det = build_detector(face_detector)
    try:
        cal = calibrate(records, det)
    except GapkitError as exc:
        log(f"no detector-box calibration: {exc}; predict --boxes detect will refuse this model")
        return None, None
    log(f"detector boxes ({det.name}) calibrated on {cal.n} of {min(len(records), 400)} training faces")
    return cal, det.name


def _steps(progress: Progress | None) -> Callable[[int, int, float], None] | None:
    """The trainer's (step, steps, loss) reports as (done, total) to ``progress``."""
    return (lambda s, n, loss: progress(s, n)) if progress else None


def second_stage(sources: Sequence[Source], cfg: TrainConfig, stage1, init: dict | None = None,
                 log: Log = lambda s: None, progress: Progress | None = None
                 ) -> tuple[Refiner | None, RefineReport | None]:
    """The second stage ``cfg.refine`` asks for after the trained net ``stage1``
    (:func:`gapkit.train.two_stage.fit_second_stage`), said in ``log``; (None, None) for a one-stage model."""
    if cfg.refine is None:
        return None, None
    refiner, rep = fit_second_stage(sources, cfg, stage1, init, log, progress, _steps(progress))
    verdict = f"kept ({rep.method})" if rep.used else "not kept: it did not beat stage 1"
    own = starts_kind(cfg.refine, sum(len(s.crops) for s in sources)) == "own"
    starts = "from stage 1's own points" if own else "from out-of-fold stage-1 points"
    log(f"second stage {verdict}: NME {rep.shape_nme_pct:.2f}% stage 1 vs {rep.refined_nme_pct:.2f}% refined "
        f"({rep.how} of {rep.n_pairs} faces, {starts}; {rep.fit_s:.0f} s)")
    if rep.problems:
        log(f"{len(rep.problems)} faces without a readable image were left out of it (first: {rep.problems[0]})")
    return refiner, rep


def fit_detector(sources: Sequence[DataSource], out: str | Path, cfg: TrainConfig | None = None,
                 n_real: int | None = None, overwrite: bool = False, log: Log = lambda s: None,
                 progress: Progress | None = None, face_detector: str | None = None) -> Detector:
    """Train the detector real-only on the pooled ``sources`` (``n_real`` of their faces, drawn
    by ``cfg.seed``) and save it to ``out``. A checkpoint ``OUT.ckpt`` lets a killed run resume."""
    cfg = cfg or detector_config()
    out = check_output(out, overwrite)
    faces, rep = load(list(sources), min_points=0.5, require="the training sets")
    if rep.problems:
        log(f"skipped {rep.skipped} records (first: {rep.problems[0]})")
    schemes = sorted({r.scheme for r in faces})
    if len(schemes) > 1:
        raise ConfigError(f"the training sets mix schemes {schemes}; convert them to one first "
                          "(gapkit convert --scheme NAME)")
    if n_real is not None:
        if n_real > len(faces):
            raise ConfigError(f"--n-real {n_real} is more than the {len(faces)} faces in the training sets")
        faces = faces.subset(n_real, seed=cfg.seed)
    log(f"training on {len(faces)} faces ({schemes[0]})")
    cal, det_name = calibrate_boxes(faces, log, face_detector)
    crops = FaceCrops(faces, cfg.size, cfg.margin)
    src = [Source(crops)]
    tag = hashlib.sha256(("\n".join(crops.ids) + cfg.model_dump_json()).encode()).hexdigest()[:16]
    ckpt = out.with_name(out.name + ".ckpt")
    if ckpt.is_file():
        log(f"resuming from {ckpt}")
    model = train(src, cfg, checkpoint=ckpt, tag=tag, progress=_steps(progress))
    refiner, rep = second_stage(src, cfg, model, log=log, progress=progress)
    det = trained_detector(model, cfg, src, "real_only", cal, det_name, refiner, rep)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one rank writes
        det.save(out, overwrite=overwrite)
        ckpt.unlink(missing_ok=True)
    return det
