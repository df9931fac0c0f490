"""Train the benchmark's detector into one model file: real-only on given data sets
(:func:`fit_detector`), or one of the benchmark's strategies on a bench.toml's data sections
(:func:`fit_strategy`). Both resume from their checkpoint and never replace an existing
model file unless told to.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from gapkit.errors import ConfigError, InputError
from gapkit.faceset import DataSource
from gapkit.files import check_output
from gapkit.train.detector import Detector, trained_detector
from gapkit.train.trainer import TrainConfig

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


def _calibrate(records: Sequence, log: Log):
    """The Haar box calibration on up to 400 of the training faces, or None where too few are found."""
    from gapkit.detect import HaarDetector, calibrate
    from gapkit.errors import GapkitError

    det = HaarDetector()
    try:
        cal = calibrate(records, det)
    except GapkitError as exc:
        log(f"no detector-box calibration: {exc}; predict --boxes detect will refuse this model")
        return None, None
    log(f"detector boxes ({det.name}) calibrated on {cal.n} of {min(len(records), 400)} training faces")
    return cal, det.name


def fit_detector(sources: Sequence[DataSource], out: str | Path, cfg: TrainConfig | None = None,
                 n_real: int | None = None, overwrite: bool = False, log: Log = lambda s: None,
                 progress: Progress | None = None) -> Detector:
    """Train the detector real-only on the pooled ``sources`` (``n_real`` of their faces, drawn
    by ``cfg.seed``) and save it to ``out``. A checkpoint ``OUT.ckpt`` lets a killed run resume."""
    from gapkit.faceset import load
    from gapkit.train import FaceCrops, Source, train

    cfg = cfg or detector_config()
    out = check_output(out, overwrite)
    faces, rep = load(list(sources), min_points=0.5)
    if rep.problems:
        log(f"skipped {rep.skipped} records (first: {rep.problems[0]})")
    if not len(faces):
        raise InputError(f"no usable face records in {', '.join(str(s.path) for s in sources)}")
    schemes = sorted({r.scheme for r in faces})
    if len(schemes) > 1:
        raise ConfigError(f"the training sets mix schemes {schemes}; convert them to one first "
                          "(gapkit convert --scheme NAME)")
    if n_real is not None:
        if n_real > len(faces):
            raise ConfigError(f"--n-real {n_real} is more than the {len(faces)} faces in the training sets")
        faces = faces.subset(n_real, seed=cfg.seed)
    log(f"training on {len(faces)} faces ({schemes[0]})")
    cal, det_name = _calibrate(faces.records, log)
    crops = FaceCrops(faces.records, cfg.size, cfg.margin)
    src = [Source(crops)]
    tag = hashlib.sha256(("\n".join(crops.ids) + cfg.model_dump_json()).encode()).hexdigest()[:16]
    ckpt = out.with_name(out.name + ".ckpt")
    if ckpt.is_file():
        log(f"resuming from {ckpt}")
    model = train(src, cfg, checkpoint=ckpt, tag=tag,
                  progress=(lambda s, n, loss: progress(s, n)) if progress else None)
    det = trained_detector(model, cfg, src, "real_only", cal, det_name)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one rank writes
        det.save(out, overwrite=overwrite)
        ckpt.unlink(missing_ok=True)
    return det


def fit_strategy(config: str | Path, strategy: str, out: str | Path, n_real: int | None = None, seed: int = 0,
                 alpha: float | None = None, steps: int | None = None, size: int | None = None,
                 overwrite: bool = False, log: Log = lambda s: None,
                 progress: Callable[[str, int, int], None] | None = None) -> tuple[Detector, dict]:
    """Train ``strategy``'s model with the benchmark's data sections of ``config`` (N_real, seed,
    alpha: one cell of its grid) and save it to ``out``. The cell runs in ``.OUT.work/`` beside
    ``out`` (its models resume there) and is scored on the config's real_test, which is only
    predicted; the detector-box calibration comes from the cell's real faces. Returns the detector and
    the cell's row."""
    from gapkit.bench import BenchConfig, override
    from gapkit.bench.runner import Runner, load_data
    from gapkit.bench.strategies import STRATEGIES

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy == "label_adapt":
        raise ConfigError("label_adapt is a model plus a label adapter, not one detector: train synthetic_only "
                          "and fit the adapter with gapkit adapt fit")
    out = check_output(out, overwrite)
    cfg = override(BenchConfig.from_toml(config), steps=steps, size=size, seeds=[seed],
                   n_real=[n_real if n_real is not None else "all"], strategies=[strategy])
    if alpha is not None or STRATEGIES[strategy].per_alpha:
        d = cfg.model_dump()
        d["grid"]["alphas"] = [alpha if alpha is not None else cfg.grid.alphas[0]]
        cfg = BenchConfig(**d)
    work = out.with_name(f".{out.name}.work")
    data = load_data(cfg, log)
    rows = Runner(cfg, work, log, progress).run(data)
    row = rows[0]
    models = work / "models"
    path = models / (f"synthetic_mapped_s{seed}.gkm" if strategy == "synthetic_only" else f"{row.key}.gkm")
    det = Detector.load(path)
    if det.meta.calibration is None:  # the config scores no detector boxes: calibrate on the cell's real faces
        from gapkit.faceset import load

        pool, _ = load(cfg.real_train, scheme=cfg.target_scheme, min_points=0.5)
        mine = set(row.real_ids)
        cal, name = _calibrate([r for r in pool.records if r.id in mine], log)
        det.meta = det.meta.model_copy(update={"calibration": asdict(cal) if cal else None, "detector": name})
    det.save(out, overwrite=overwrite)
    Runner.discard(work)  # what the runner wrote, and nothing else
    (work / "config.json").unlink(missing_ok=True)
    for folder in (models, work / "cells", work):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return det, row.model_dump()
