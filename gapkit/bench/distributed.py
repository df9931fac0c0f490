"""The benchmark grid on Ray (`gapkit benchmark --ray`): cells as Ray tasks with their real
dependencies, the driver alone writing cells and models. Imported only with ``--ray``.

The tasks come from what each strategy declares (:class:`~gapkit.bench.cell.Strategy`), never
from its name. Per seed, one task trains the synthetic model (with the cells of the strategies
whose ``task`` is ``"seed"``: ``synthetic_only``) when any unfinished cell needs it. Cells of a
strategy with ``task = "cell"`` are one task each (``real_only``; ``mix``, one per alpha;
``finetune``); those sharing a group name are one task per N_real and seed (``label_adapt`` and
``data_adapt``: the same adapter). A task waits for the seed's synthetic task where its
strategies need the synthetic model, and for the tasks of the models its strategies ``reuse``
(``finetune`` after ``data_adapt``).

A task runs the in-process :class:`~gapkit.bench.runner.Runner` on a scratch folder, with the
models it depends on handed in, and returns its rows and new models as bytes; nothing it
computes differs from the in-process run (each cell's adapter is refitted from the same seed),
so the rows are the same but for their timings. The driver writes each task's rows and models
as it finishes, so a killed run resumes from the finished cells. A task asks for one GPU where
the cluster has any.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gapkit.bench.cell import Cell, Data, closure
from gapkit.bench.config import BenchConfig
from gapkit.bench.results import CellResult, collect
from gapkit.bench.runner import Runner
from gapkit.bench.selection import looks_at_faces
from gapkit.devices import set_threads
from gapkit.errors import ConfigError
from gapkit.files import atomic_open, atomic_write_text

Log = Callable[[str], None]


def _work(cfg_json: str, data: Data, keys: list[str], models_in: dict[str, bytes],
          synthetic_seed: int | None, threads: int) -> tuple[list[dict], dict[str, bytes]]:
    """One task: run the cells ``keys`` (and, with ``synthetic_seed``, that seed's synthetic model)
    in a scratch folder; return their rows and the models it trained."""
    set_threads(threads)
    cfg = BenchConfig.model_validate_json(cfg_json)
    tmp = Path(tempfile.mkdtemp(prefix="gapkit-ray-"))
    try:
        runner = Runner(cfg, tmp)
        for name, blob in models_in.items():
            (tmp / "models" / name).write_bytes(blob)
        if synthetic_seed is not None:
            runner.synthetic_model(data, synthetic_seed)
        runner.run(data, only=set(keys))
        rows = [json.loads(p.read_text()) for p in sorted((tmp / "cells").glob("*.json"))]
        models = {p.name: p.read_bytes() for p in (tmp / "models").glob("*.gkm") if p.name not in models_in}
        return rows, models
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Task:
    """Cells run together in one Ray task, after the tasks it waits for."""

    name: tuple
    seed: int
    keys: list[str] = field(default_factory=list)
    after: list[tuple] = field(default_factory=list)
    synthetic: bool = False  # it trains the seed's synthetic model first


def _task_of(cell: Cell) -> tuple:
    """The task a cell runs in, as its strategy declares (Strategy.task)."""
    s = cell.strategy
    if s.task == "seed":
        return ("seed", cell.seed)
    if s.task == "cell":
        return ("cell", s.name, cell.seed, cell.n, cell.alpha, cell.selection)
    return ("group", s.task, cell.seed, cell.n, cell.selection)


def _plan(runner: Runner, data: Data) -> list[Task]:
    """The grid's unfinished cells grouped into tasks, each after the tasks it waits for: the
    seed's synthetic model where a cell needs it, the models its strategy reuses."""
    cells = [cell for cell, _ in runner.cells(data) if not runner.done(cell.key())]
    tasks: dict[tuple, Task] = {}
    home: dict[str, tuple] = {}  # an unfinished cell's key -> its task
    for cell in cells:
        name = _task_of(cell)
        tasks.setdefault(name, Task(name, cell.seed, synthetic=name[0] == "seed")).keys.append(cell.key())
        home[cell.key()] = name
    for cell in cells:
        task = tasks[home[cell.key()]]
        wait = [home[k] for k in map(cell.key, cell.strategy.reuses) if k in home]
        # a policy that looks at faces ranks the pool through the seed's synthetic model
        needs_model = "synthetic_model" in closure(cell.strategy.needs) or looks_at_faces(cell.selection)
        if needs_model and not task.synthetic:
            first = ("seed", cell.seed)  # every task that needs the synthetic model starts from it
            tasks.setdefault(first, Task(first, cell.seed, synthetic=True))
            wait.insert(0, first)
        task.after += [w for w in wait if w != task.name and w not in task.after]
    return _ordered(tasks)


def _ordered(tasks: dict[tuple, Task]) -> list[Task]:
    """The seeds' synthetic tasks first, then the rest in grid order, each after those it waits
    for (tasks are submitted in this order, so a dependency is always submitted first)."""
    out: list[Task] = []
    seen: set[tuple] = set()

    def visit(name: tuple) -> None:
        if name not in seen:
            seen.add(name)
            for d in tasks[name].after:
                visit(d)
            out.append(tasks[name])

    for name in [*sorted((n for n in tasks if n[0] == "seed"), key=lambda n: n[1]), *tasks]:
        visit(name)
    return out


def run_on_ray(cfg: BenchConfig, out: Path, data: Data, address: str = "auto", log: Log = lambda s: None,
               progress: Callable[[int, int], None] | None = None, num_cpus: int | None = None) -> list[CellResult]:
    """Run the unfinished cells of ``cfg`` on Ray (``address``: ``auto`` joins a running cluster
    or starts a local instance; ``local`` always starts one); returns every finished row."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray  # deferred: an optional extra (gapkit[ray]), and a heavy import
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'gapkit[ray]'") from None
    runner = Runner(cfg, out)  # checks out/ holds no other configuration's cells
    tasks = _plan(runner, data)
    keys = sum(len(t.keys) for t in tasks)
    if not keys:
        return collect(out)
    started = not ray.is_initialized()
    if started:
        _start(ray, address, num_cpus)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        log(f"Ray: {len(tasks)} tasks for {keys} cells on {ray.cluster_resources().get('CPU', 0):g} CPUs"
            + (f", {ray.cluster_resources()['GPU']:g} GPUs" if gpus else ""))
        pending = _submit(ray, tasks, cfg, out, data, gpus)
        _gather(ray, pending, out, keys, log, progress)
    finally:
        if started:
            ray.shutdown()
    return collect(out)


def _start(ray, address: str, num_cpus: int | None) -> None:
    """Join the cluster at ``address`` (``auto``: a running one, else a local instance) or start a local one."""
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address == "local":
        ray.init(num_cpus=num_cpus, **kw)
    elif address == "auto":
        try:
            ray.init(address="auto", **kw)
        except (ConnectionError, RuntimeError):
            ray.init(num_cpus=num_cpus, **kw)
    else:
        ray.init(address=address, **kw)


def _submit(ray, tasks: list[Task], cfg: BenchConfig, out: Path, data: Data, gpus: bool) -> list:
    """Submit every task (in plan order, so a task's dependencies are submitted before it)."""
    work = ray.remote(_work).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=1)
    merge = ray.remote(_merged).options(num_cpus=0)
    cfg_json = cfg.model_dump_json()
    data_ref = ray.put(data)
    have = {p.name: p.read_bytes() for p in (out / "models").glob("*.gkm")}
    refs: dict[tuple, object] = {}
    for t in tasks:
        deps = [refs[d] for d in t.after]
        # the models it needs: those on disk (a resumed run) and its dependencies' (Ray
        # resolves them before the task starts)
        models = merge.remote(have, *deps) if deps else have
        refs[t.name] = work.remote(cfg_json, data_ref, t.keys, models, t.seed if t.synthetic else None, 1)
    return list(refs.values())


def _gather(ray, pending: list, out: Path, total: int, log: Log,
            progress: Callable[[int, int], None] | None) -> None:
    """Write each task's models and rows as it finishes (a killed run resumes from them)."""
    finished = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        rows, models = ray.get(ready[0])
        for name, blob in models.items():
            _write_bytes(out / "models" / name, blob)
        for row in rows:
            r = CellResult(**row)
            atomic_write_text(out / "cells" / f"{r.key}.json", r.model_dump_json(), overwrite=True)
            finished += 1
            log(f"{r.name} n={r.n_real} seed={r.seed}: NME({r.normaliser}) {r.nme_pct:.2f}% ({r.time_s:.0f} s, Ray)")
        if progress:
            progress(finished, total)


def _merged(have: dict, *results) -> dict:
    """The models on disk with those of the dependencies' results added."""
    out = dict(have)
    for _, models in results:
        out.update(models)
    return out


def _write_bytes(path: Path, blob: bytes) -> None:
    with atomic_open(path, "wb", overwrite=True) as f:
        f.write(blob)
