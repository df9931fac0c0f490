"""The strategy table (:mod:`gapkit.bench.strategies`) walked over an N_real x seed grid,
resumable cell by cell.

Per seed the real training pool is permuted once and the N_real subsets are its prefixes
(nested). What strategies declare they need is built once and shared: the synthetic model
per seed (trained on the synthetic labels mapped deterministically into the target scheme),
and per cell the LabelAdapter (fitted on that model's predictions on the cell's N_real images
against their labels; its own validation split is carved from them) and the synthetic set
with adapted labels (the adapter applied to the synthetic model's predictions on the
synthetic faces, the kind of input it was fitted on). Every model is scored on label-box test
crops and, with ``detector_boxes``, on crops from a face detector's box. The test set is
only ever predicted, never fitted, selected on or stopped on. Every result row records its
provenance: which sets, ids, labels and init.

The runner knows no strategy by name: it reads the table's declarations (needs, per_alpha,
model) and hands each cell the run's :class:`~gapkit.bench.cell.Data`; a cell reaches back only
through :class:`~gapkit.bench.cell.Host` (``train``, ``predict_test``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np

from gapkit.adapt import FitConfig, LabelAdapter
from gapkit.bench.cell import SYNTHETIC_MODEL, Cell, Data, closure, synthetic_key
from gapkit.bench.config import BenchConfig
from gapkit.bench.results import AdapterInfo, CellResult, DetectorScore, collect
from gapkit.bench.selection import (
    PoolView,
    Ranking,
    get_policy,
    looks_at_faces,
    pool_view,
    rank_by_list,
    read_selection,
)
from gapkit.bench.strategies import STRATEGIES, synthetic_model_owner
from gapkit.detect import LEGACY_DETECTOR, build_detector, detector_boxes
from gapkit.devices import resolve_device
from gapkit.errors import GapkitError, InputError
from gapkit.faceset import DataSource, FaceSet, load
from gapkit.files import atomic_write_text
from gapkit.metrics import summary
from gapkit.schemes import LandmarkScheme, get_scheme
from gapkit.train import FaceCrops, Source, predict, train
from gapkit.train.detector import Detector, trained_detector
from gapkit.train.fit import second_stage

Log = Callable[[str], None]

__all__ = ["Cell", "Data", "Runner", "load_data"]


def _load(sets: list[DataSource], target: str, what: str, log: Log) -> FaceSet:
    # a face with more than half of its points missing after mapping cannot be trained on
    faces, rep = load(sets, scheme=target, min_points=0.5, require=what)
    if rep.problems:
        log(f"{what}: skipped {rep.skipped} records (first: {rep.problems[0]})")
    return faces


def load_data(cfg: BenchConfig, log: Log = lambda s: None) -> Data:
    """The run's faces: the real pool and test set, the synthetic sets (ids prefixed), and with
    ``detector_boxes`` the test faces a calibrated detector finds."""
    t = cfg.train
    pool = _load(cfg.real_train, cfg.target_scheme, "real_train", log)
    test = _load(cfg.real_test, cfg.target_scheme, "real_test", log)
    overlap = set(pool.images) & set(test.images)
    if overlap:
        raise GapkitError(f"{len(overlap)} images are in both real_train and real_test, e.g. {sorted(overlap)[0]}")
    syn = FaceSet([r.model_copy(update={"id": f"s{i}/{r.id}"}) for i, ds in enumerate(cfg.synthetic)
                   for r in _load([ds], cfg.target_scheme, f"synthetic[{i}]", log)], cfg.target_scheme)
    crops = [FaceCrops(x, t.size, t.margin, cache=cfg.crop_cache) for x in (pool, test, syn)]
    data = Data(*crops, test_points=test.points)
    if cfg.detector_boxes:
        data.detected = det = detector_boxes(test, pool, build_detector(cfg.face_detector))
        log(f"detector boxes ({det.detector}, calibrated on {det.calibration.n} training faces): "
            f"found {len(det.records)} of {len(test)} test faces, missed {len(det.missed)}")
        if not det.records:
            raise InputError("the face detector found none of the test faces")
        data.test_detected = FaceCrops(det.records, t.size, t.margin, cache=cfg.crop_cache)
    return data


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _file_patterns() -> tuple[re.Pattern, re.Pattern]:
    """The names of the cell rows and model files a run writes, from the strategy table (every
    strategy's cells; its models and the seeds' synthetic models, with their checkpoints)."""
    names = "|".join(map(re.escape, STRATEGIES))
    models = "|".join(map(re.escape, [*STRATEGIES, SYNTHETIC_MODEL]))
    sel = r"(?:_sel-[A-Za-z0-9_]+)?"
    return (re.compile(rf"^(?:{names})(?:_a[0-9.e+-]+)?_n\d+_s-?\d+{sel}\.json$"),
            re.compile(rf"^(?:{models})(?:_a[0-9.e+-]+)?(?:_n\d+)?_s-?\d+{sel}\.(?:gkm|pt|ckpt|tmp)$"))


class Runner:
    """Runs the grid into ``out`` (cells/, models/), skipping cells already finished; the
    :class:`~gapkit.bench.cell.Host` of its cells."""

    def __init__(self, cfg: BenchConfig, out: Path, log: Log = lambda s: None,
                 progress: Callable[[str, int, int], None] | None = None):
        self.cfg, self.out, self.log, self.progress = cfg, Path(out), log, progress
        self.device = resolve_device(cfg.train.device)  # once, for training, prediction and the adapter
        saved = self.out / "config.json"
        # Where the crops are cached does not change a result; loader_workers = 0, channels-last and
        # no second stage are what runs did before those options existed, and the face detector
        # matters only with detector boxes (Haar is what runs used before it was named): these
        # stay out, so those runs still resume.
        unused_detector = not cfg.detector_boxes or cfg.face_detector == LEGACY_DETECTOR
        t = cfg.train
        as_before = {k for k, same in (("loader_workers", not t.loader_workers), ("channels_last", t.channels_last),
                                       ("refine", t.refine is None)) if same}
        skip: dict = {"crop_cache": True} | ({"train": as_before} if as_before else {}) \
            | ({"face_detector": True} if unused_detector else {})
        now = cfg.model_dump_json(indent=1, exclude=skip)
        # Finished cells are only reused by the configuration that made them.
        if saved.is_file() and saved.read_text() != now and any((self.out / "cells").glob("*.json")):
            raise GapkitError(f"{self.out} holds cells of another configuration (see its config.json); "
                              "use another --name, or --fresh to discard them")
        (self.out / "cells").mkdir(parents=True, exist_ok=True)
        (self.out / "models").mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, now, overwrite=True)

    @cached_property
    def scheme(self) -> LandmarkScheme:
        return get_scheme(self.cfg.target_scheme)

    # ---- bookkeeping ----------------------------------------------------------------
    @staticmethod
    def discard(out: Path) -> int:
        """Remove the finished cells and trained models a run wrote into ``out`` (for --fresh),
        and nothing else: other files in cells/ and models/ are the user's."""
        cell, model = _file_patterns()
        gone = 0
        for folder, pattern in ((out / "cells", cell), (out / "models", model)):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.is_file() and pattern.match(p.name):
                        p.unlink()
                        gone += 1
        return gone

    def _cell_path(self, key: str) -> Path:
        return self.out / "cells" / f"{key}.json"

    def train(self, data: Data, sources: list[Source], seed: int, key: str, strategy: str,
              steps: int | None = None, init: dict | None = None, lr: float | None = None) -> Detector:
        """Train the model ``key`` (or reload it when a previous cell or run saved it). Models are
        saved as model files (:mod:`gapkit.train.detector`) recording ``strategy``, so `gapkit
        predict` runs any of them. With ``[train.refine]`` each has its second stage, trained on
        the same sources from stage-1 points (:mod:`gapkit.train.two_stage`)."""
        t = self.cfg.train
        path = self.out / "models" / f"{key}.gkm"
        if path.is_file():
            return Detector.load(path, self.cfg.target_scheme)
        steps = steps or t.steps
        tc = t.model_copy(update={"steps": steps, "lr": lr or t.lr, "seed": seed, "device": self.device,
                                  "checkpoint_every": max(50, steps // 4)})
        ckpt = self.out / "models" / f"{key}.ckpt"
        step = (lambda s, n, loss: self.progress(key, s, n)) if self.progress else None
        model = train(sources, tc, init=init, checkpoint=ckpt, progress=step)
        refiner, rep = second_stage(sources, tc, model, init, log=lambda m: None, progress=None) if tc.refine else (None, None)
        det = data.detected
        out = trained_detector(model, tc, sources, strategy, det.calibration if det else None,
                               det.detector if det else None, refiner, rep)
        out.save(path, overwrite=True)
        ckpt.unlink(missing_ok=True)
        return out

    def predict_crops(self, model: Detector, crops: FaceCrops) -> np.ndarray:
        """Image points (N, K, 2) of every face of ``crops``: stage 1, then the second stage where
        the model has one (it reads each face's image)."""
        pts = predict(model.net, crops, device=self.device, flip=self.cfg.train.flip_test)
        return model.refiner(crops.paths, pts, crops.ids)[0] if model.refiner is not None else pts

    def predict_test(self, data: Data, model: Detector) -> dict[str, np.ndarray]:
        return {k: self.predict_crops(model, crops) for k, crops in data.test_crops().items()}

    # ---- the grid -------------------------------------------------------------------
    def n_values(self, pool_size: int) -> list[int]:
        out = []
        for n in self.cfg.grid.n_real:
            v = pool_size if n == "all" else int(n)
            if v > pool_size:
                self.log(f"n_real {v} is more than the {pool_size} real training images; using {pool_size}")
                v = pool_size
            if v not in out:
                out.append(v)
        return sorted(out)

    def cells(self, data: Data):
        """Every cell of the grid in run order, with the dict its per-seed needs are shared through.
        A cell's N_real faces are the first N of its selection policy's ranking of the pool,
        ranked when a cell first asks (a policy that looks at faces needs the synthetic model)."""
        g = self.cfg.grid
        chosen = [STRATEGIES[name] for name in STRATEGIES if name in g.strategies]
        for seed in g.seeds:
            per_seed: dict = {}
            for selection in g.selection:
                for n in self.n_values(len(data.pool)):
                    shared = dict(per_seed)

                    def idx(selection=selection, n=n, seed=seed, per_seed=per_seed) -> np.ndarray:
                        return self.ranking(data, selection, seed, per_seed).take(n)

                    for s in chosen:
                        for alpha in (g.alphas if s.per_alpha else [None]):
                            yield Cell(self, data, s, n, seed, alpha, idx, shared, selection), per_seed

    def ranking(self, data: Data, selection: str, seed: int, per_seed: dict | None = None) -> Ranking:
        """The pool ranked by ``selection`` for ``seed`` (kept in ``per_seed``): nothing of the
        pool's labels is read, only its crops through the seed's synthetic model."""
        per_seed = {} if per_seed is None else per_seed
        key = f"ranking:{selection}"
        if key not in per_seed:
            if selection == "list":
                ids = read_selection(self.cfg.selection_list)
                per_seed[key] = rank_by_list(data.pool.ids, ids, seed, str(self.cfg.selection_list))
            else:
                view = self.pool_view(data, seed, per_seed) if looks_at_faces(selection) else None
                per_seed[key] = get_policy(selection).rank(len(data.pool), view, seed)
        return per_seed[key]

    def pool_view(self, data: Data, seed: int, per_seed: dict) -> PoolView:
        """The pool as the seed's synthetic model sees it (trained or reloaded), without labels."""
        if "pool_view" not in per_seed:
            model = per_seed.get("synthetic_model") or self.synthetic_model(data, seed)
            per_seed["pool_view"] = pool_view(model.net, data.pool, self.device)
        return per_seed["pool_view"]

    def done(self, key: str) -> bool:
        return self._cell_path(key).is_file()

    def run(self, data: Data, only: set[str] | None = None) -> list[CellResult]:
        """Run every unfinished cell (or those of ``only``, by key) and return all finished rows."""
        for cell, per_seed in self.cells(data):
            if self.done(cell.key()) or (only is not None and cell.key() not in only):
                continue
            self._prepare(cell, per_seed)
            self._run_cell(cell)
        return collect(self.out)

    def synthetic_model(self, data: Data, seed: int) -> Detector:
        """Train (or reload) the synthetic model of ``seed`` alone, as the Ray grid's first task does."""
        return self.train(data, [Source(data.synthetic)], seed, synthetic_key(seed), synthetic_model_owner())

    # ---- what strategies need ---------------------------------------------------------
    def _prepare(self, cell: Cell, per_seed: dict) -> None:
        """Build what ``cell``'s strategy declares it needs, once per seed or per (N_real, seed)."""
        want, shared = closure(cell.strategy.needs), cell.shared
        if "synthetic_model" in want and "synthetic_model" not in shared:
            if "synthetic_model" not in per_seed:
                self._synthetic(cell.data, cell.seed, per_seed)
            shared.update(per_seed)
        if "adapter" in want and "adapter" not in shared:
            self._fit_adapter(cell)
        if "adapted" in want and "adapted" not in shared:
            self._adapt_synthetic(cell, per_seed)

    def _synthetic(self, data: Data, seed: int, per_seed: dict) -> None:
        """The seed's synthetic model and its predictions on the real pool and the test set."""
        model = self.synthetic_model(data, seed)
        on_pool = self.predict_crops(model, data.pool)
        per_seed.update(synthetic_model=model, synthetic_on_pool=on_pool,
                        synthetic_on_test=self.predict_test(data, model))

    def _fit_adapter(self, cell: Cell) -> None:
        """The cell's LabelAdapter: the synthetic model's predictions on its N_real images -> their labels."""
        t0, pool, shared = time.perf_counter(), cell.data.pool, cell.shared
        pool_gt = pool.to_image(cell.idx, pool.points[cell.idx])
        adapter = LabelAdapter(self.cfg.target_scheme, self.cfg.target_scheme)
        fit = adapter.fit(shared["synthetic_on_pool"][cell.idx], pool_gt,
                          FitConfig(seed=cell.seed, device=self.device), ids=cell.ids)
        shared["adapter"] = adapter
        shared["adapter_info"] = AdapterInfo(
            train_ids=cell.ids, head=fit.head, fit_s=round(time.perf_counter() - t0, 2),
            fitted_on="synthetic model's predictions on the N_real images -> their labels")

    def _adapt_synthetic(self, cell: Cell, per_seed: dict) -> None:
        """The synthetic set with labels rewritten by the cell's adapter."""
        # The adapter maps the synthetic model's predictions, so it rewrites the synthetic
        # model's predictions on the synthetic faces, not their clean labels: another input
        # distribution, on which it was never fitted.
        shared, synthetic = cell.shared, cell.data.synthetic
        if "synthetic_on_synthetic" not in per_seed:
            per_seed["synthetic_on_synthetic"] = self.predict_crops(shared["synthetic_model"], synthetic)
        adapted = shared["adapter"].predict(per_seed["synthetic_on_synthetic"])
        shared["adapted"] = Source(synthetic.with_points(adapted))
        shared["adapter_info"] = shared["adapter_info"].model_copy(
            update={"applied_to": "synthetic model's predictions on the synthetic training faces"})

    # ---- scoring --------------------------------------------------------------------
    def _score(self, pred: np.ndarray, gt: np.ndarray) -> dict:
        """NME, FR and AUC at the configured threshold, and the per-face NMEs (rounded) for a row."""
        m = self.cfg.metric
        sc = summary(pred, gt, self.scheme, m.normaliser, threshold=m.failure_threshold, per_face=True)
        return {"normaliser": sc["normaliser"], "nme_pct": sc["nme_pct"], "fr": sc[f"fr@{m.failure_threshold:g}"],
                "auc": sc[f"auc@{m.failure_threshold:g}"],
                "per_face_nme": [round(float(v), 6) for v in sc["per_face_nme"]]}

    def _detector_score(self, data: Data, pred: np.ndarray | None) -> DetectorScore | None:
        det = data.detected
        if det is None or pred is None:
            return None
        sc = self._score(pred, data.test_points[det.index])
        found, total = len(det.index), len(data.test_points)
        return DetectorScore(detector=det.detector, found=found, missed=len(det.missed), missed_ids=det.missed,
                             fr_all=(sc["fr"] * found + total - found) / total,
                             **{k: v for k, v in sc.items() if k != "normaliser"})

    def _run_cell(self, cell: Cell) -> None:
        """Run one strategy on one cell, score it on the test set, save the row with its provenance."""
        t0 = time.perf_counter()
        out = cell.strategy.run(cell)
        elapsed = time.perf_counter() - t0
        data, test_ids = cell.data, cell.data.test.ids
        row = CellResult(
            strategy=cell.strategy.name, alpha=cell.alpha, n_real=cell.n, seed=cell.seed, selection=cell.selection,
            test_set="real_test",
            test_n=len(test_ids), test_ids_sha=_digest(test_ids), real_ids=cell.ids,
            threshold=self.cfg.metric.failure_threshold, **self._score(out.pred["labels"], data.test_points),
            time_s=round(elapsed, 2), train=out.train, init=out.init, predictions=out.predictions,
            adapter=cell.shared.get("adapter_info") if "adapter" in closure(cell.strategy.needs) else None,
            detector=self._detector_score(data, out.pred.get("detector")))
        atomic_write_text(self._cell_path(cell.key()), row.model_dump_json(), overwrite=True)
        self.log(f"{row.name} n={row.n_real} seed={row.seed}: NME({row.normaliser}) {row.nme_pct:.2f}% "
                 f"({row.time_s:.0f} s)")
