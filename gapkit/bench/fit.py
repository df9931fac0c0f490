"""`gapkit train --config T.toml --strategy NAME`: one cell of the benchmark's grid trained into
one model file, the file the strategy declares as its detector (:class:`~gapkit.bench.cell.Strategy`'s
``model``). It resumes from its working folder and never replaces an existing model file unless
told to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from gapkit.bench.cell import Strategy
from gapkit.bench.config import BenchConfig, override
from gapkit.bench.results import CellResult
from gapkit.bench.runner import Runner, load_data
from gapkit.bench.strategies import STRATEGIES
from gapkit.errors import ConfigError
from gapkit.faceset import load
from gapkit.files import check_output
from gapkit.train.detector import Detector
from gapkit.train.fit import calibrate_boxes

Log = Callable[[str], None]


def _one_model(name: str) -> Strategy:
    """The strategy ``name``, refused where it is not one model file."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    s = STRATEGIES[name]
    if s.model is None:
        raise ConfigError(f"{name} is {s.no_model}")
    return s


def _cell_config(config: str | Path, s: Strategy, n_real: int | None, seed: int, alpha: float | None,
                 steps: int | None, size: int | None) -> BenchConfig:
    """The config's grid narrowed to the one cell (N_real, seed, alpha) of strategy ``s``, its
    faces chosen by the config's first selection policy."""
    base = BenchConfig.from_toml(config)
    cfg = override(base, steps=steps, size=size, seeds=[seed], n_real=[n_real if n_real is not None else "all"],
                   strategies=[s.name], selection=base.grid.selection[:1])
    if alpha is not None or s.per_alpha:
        d = cfg.model_dump()
        d["grid"]["alphas"] = [alpha if alpha is not None else cfg.grid.alphas[0]]
        cfg = BenchConfig(**d)
    return cfg


def _calibrated(det: Detector, cfg: BenchConfig, row: CellResult, log: Log) -> Detector:
    """``det`` with a detector-box calibration: where the config scores no detector boxes, one
    fitted on the cell's real faces."""
    if det.meta.calibration is None:
        pool, _ = load(cfg.real_train, scheme=cfg.target_scheme, min_points=0.5, require="real_train")
        mine = set(row.real_ids)
        cal, name = calibrate_boxes([r for r in pool if r.id in mine], log, cfg.face_detector)
        det.meta = det.meta.model_copy(update={"calibration": asdict(cal) if cal else None, "detector": name})
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
    s = _one_model(strategy)
    out = check_output(out, overwrite)
    cfg = _cell_config(config, s, n_real, seed, alpha, steps, size)
    work = out.with_name(f".{out.name}.work")
    data = load_data(cfg, log)
    rows = Runner(cfg, work, log, progress).run(data)
    row = rows[0]
    models = work / "models"
    det = _calibrated(Detector.load(models / f"{s.model_key(row.n_real, row.seed, row.alpha, row.selection)}.gkm"),
                      cfg, row, log)
    det.save(out, overwrite=overwrite)
    Runner.discard(work)  # what the runner wrote, and nothing else
    (work / "config.json").unlink(missing_ok=True)
    for folder in (models, work / "cells", work):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return det, row.model_dump()
