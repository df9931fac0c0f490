"""The strategy benchmark: one detector, the ways to use synthetic data of
:mod:`gapkit.bench.strategies`, an N_real sweep.

Modules, each importing only those before it: ``results`` (typed rows), ``stats``; ``cell``
(Strategy, Cell, Outcome, the needs); ``strategies`` (the table); ``config``; ``runner``;
``distributed`` (Ray), ``fit`` (one cell into one model file), ``report``; this package.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gapkit.bench.config import BenchConfig, Grid, override
from gapkit.bench.distributed import run_on_ray
from gapkit.bench.fit import fit_strategy
from gapkit.bench.report import write_outputs
from gapkit.bench.results import CellResult, collect
from gapkit.bench.runner import Runner, load_data
from gapkit.bench.strategies import STRATEGIES
from gapkit.faceset import DataSource
from gapkit.sim import SimConfig, generate
from gapkit.train import TrainConfig

__all__ = ["STRATEGIES", "BenchConfig", "CellResult", "Runner", "collect", "default_config", "fit_strategy",
           "load_data", "override", "run", "run_folder", "write_outputs"]


def default_config(data_dir: Path, quick: bool = False, workers: int = 1,
                   progress: Callable[[str, int], None] | None = None) -> BenchConfig:
    """Simulate the default data into ``data_dir`` (kept between runs) and return its config.

    Real train and test faces come from disjoint sample indices; the synthetic set has the
    default label gap and visual gap. The grid takes about 18 minutes on 2 CPU cores.
    """
    n_syn, n_pool, n_test = (300, 60, 60) if quick else (2000, 300, 300)
    sets = {"synthetic": SimConfig(domain="synthetic", n=n_syn, size=128, seed=0),
            "real_train": SimConfig(domain="real", n=n_pool, size=128, seed=0, split="train"),
            "real_test": SimConfig(domain="real", n=n_test, size=128, seed=0, split="test", start=1_000_000)}
    for name, sc in sets.items():
        folder = Path(data_dir) / name
        if not (folder / "manifest.jsonl").is_file():
            generate(folder, sc, workers=workers, progress=(lambda k, name=name: progress(name, k)) if progress else None)
    if quick:
        grid = Grid(n_real=[10, 30], seeds=[0], alphas=[0.5])
        train = TrainConfig(steps=30, batch_size=16, size=64, width=8)
    else:
        grid = Grid(n_real=[10, 30, 100, "all"], seeds=[0, 1], alphas=[0.5])
        train = TrainConfig(steps=400, batch_size=32, size=64, width=16)
    m = lambda name: DataSource(path=Path(data_dir) / name / "manifest.jsonl", format="manifest")  # noqa: E731
    return BenchConfig(name="default-sim", real_train=m("real_train"), real_test=m("real_test"),
                       synthetic=[m("synthetic")], grid=grid, train=train)


def run(cfg: BenchConfig, out: Path, log: Callable[[str], None] = lambda s: None,
        progress: Callable[[str, int, int], None] | None = None, smoke: bool = False,
        ray: str | None = None) -> list[Path]:
    """Run (or resume) the benchmark into ``out`` and write its report and figures; a ``smoke``
    run (``--quick``) is marked as one and states no findings. With ``ray`` (an address,
    ``auto`` or ``local``) the cells run as Ray tasks (:mod:`gapkit.bench.distributed`)."""
    data = load_data(cfg, log)
    log(f"data: {len(data.pool)} real training, {len(data.test)} real test, {len(data.synthetic)} synthetic faces")
    if ray is not None:
        rows = run_on_ray(cfg, out, data, address=ray, log=log,
                          progress=(lambda k, n: progress("cells", k, n)) if progress else None)
    else:
        rows = Runner(cfg, out, log, progress).run(data)
    return write_outputs(rows, out, f"gapkit benchmark: {cfg.name}", smoke=smoke)


def run_folder(out: Path, name: str | None, cfg_name: str | None, quick: bool, fresh: bool) -> tuple[Path, int]:
    """The run's folder ``out/NAME`` and how many finished cells it holds (after ``fresh``
    discards the ones a previous run wrote)."""
    folder = Path(out) / (name or ((cfg_name or "default-sim") + ("-quick" if quick else "")))
    if fresh and folder.exists():
        Runner.discard(folder)
    cells = folder / "cells"
    return folder, len(list(cells.glob("*.json"))) if cells.is_dir() else 0
