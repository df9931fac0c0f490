"""The benchmark grid on Ray (`gapkit benchmark --ray`): cells as Ray tasks with their real
dependencies, the driver alone writing cells and models. Imported only with ``--ray``.

Per seed the tasks are
- the synthetic model (with the ``synthetic_only`` cells, which need nothing more);
- per N_real, independent of it: ``real_only``;
- per N_real, after the synthetic model: ``label_adapt`` and ``data_adapt`` (one task: the
  same adapter), and ``mix`` (one task per alpha);
- per N_real, after the synthetic model and ``data_adapt``'s model: ``finetune``.

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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from gapkit.bench.config import BenchConfig
from gapkit.bench.results import CellResult, collect
from gapkit.bench.runner import Data, Runner
from gapkit.errors import ConfigError
from gapkit.files import atomic_open, atomic_write_text

Log = Callable[[str], None]


def _work(cfg_json: str, data: Data, keys: list[str], models_in: dict[str, bytes],
          synthetic_seed: int | None, threads: int) -> tuple[list[dict], dict[str, bytes]]:
    """One task: run the cells ``keys`` (and, with ``synthetic_seed``, that seed's synthetic model)
    in a scratch folder; return their rows and the models it trained."""
    from gapkit.devices import set_threads

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


def _plan(runner: Runner, data: Data) -> list[dict]:
    """The grid's unfinished cells grouped into tasks: each {name, keys, after: [task names], seed}."""
    todo: dict[tuple, list[str]] = defaultdict(list)
    for cell, _ in runner.cells(data):
        key = cell.key()
        if runner.done(key):
            continue
        s, n, seed = cell.strategy.name, cell.n, cell.seed
        group = {"real_only": ("real", seed, n), "synthetic_only": ("synthetic", seed),
                 "label_adapt": ("adapt", seed, n), "data_adapt": ("adapt", seed, n),
                 "mix": ("mix", seed, n, cell.alpha), "finetune": ("finetune", seed, n)}.get(s, ("other", seed, n, s))
        todo[group].append(key)
    tasks: dict[tuple, dict] = {}
    seeds = sorted({g[1] for g in todo})
    for seed in seeds:
        if any(g[1] == seed and g[0] != "real" for g in todo):  # every other task starts from it
            tasks[("synthetic", seed)] = {"keys": todo.get(("synthetic", seed), []), "after": [], "seed": seed,
                                          "synthetic": True}
    for g, keys in todo.items():
        if g[0] == "synthetic":
            continue
        after = [] if g[0] == "real" else [("synthetic", g[1])]
        if g[0] == "finetune" and ("adapt", g[1], g[2]) in todo:
            after.append(("adapt", g[1], g[2]))
        tasks[g] = {"keys": keys, "after": after, "seed": g[1], "synthetic": False}
    return [{"name": k, **v} for k, v in tasks.items()]


def run_on_ray(cfg: BenchConfig, out: Path, data: Data, address: str = "auto", log: Log = lambda s: None,
               progress: Callable[[int, int], None] | None = None, num_cpus: int | None = None) -> list[CellResult]:
    """Run the unfinished cells of ``cfg`` on Ray (``address``: ``auto`` joins a running cluster
    or starts a local instance; ``local`` always starts one); returns every finished row."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'gapkit[ray]'") from None
    runner = Runner(cfg, out)  # checks out/ holds no other configuration's cells
    tasks = _plan(runner, data)
    keys = sum(len(t["keys"]) for t in tasks)
    if not keys:
        return collect(out)
    started = not ray.is_initialized()
    if started:
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
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        work = ray.remote(_work).options(num_cpus=1, num_gpus=1 if gpus else 0, max_retries=1)
        merge = ray.remote(_merged).options(num_cpus=0)
        log(f"Ray: {len(tasks)} tasks for {keys} cells on {ray.cluster_resources().get('CPU', 0):g} CPUs"
            + (f", {ray.cluster_resources()['GPU']:g} GPUs" if gpus else ""))
        cfg_json = cfg.model_dump_json()
        data_ref = ray.put(data)
        have = {p.name: p.read_bytes() for p in (out / "models").glob("*.gkm")}
        refs: dict = {}
        owner: dict = {}
        for t in tasks:  # in plan order, so a task's dependencies are submitted before it
            deps = [refs[d] for d in t["after"] if d in refs]
            # the models it needs: those on disk (a resumed run) and its dependencies' (Ray
            # resolves them before the task starts)
            models = merge.remote(have, *deps) if deps else have
            ref = work.remote(cfg_json, data_ref, t["keys"], models, t["seed"] if t["synthetic"] else None, 1)
            refs[t["name"]], owner[ref] = ref, t
        pending, finished = list(owner), 0
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
                progress(finished, keys)
    finally:
        if started:
            ray.shutdown()
    return collect(out)


def _merged(have: dict, *results) -> dict:
    """The models on disk with those of the dependencies' results added."""
    out = dict(have)
    for _, models in results:
        out.update(models)
    return out


def _write_bytes(path: Path, blob: bytes) -> None:
    with atomic_open(path, "wb", overwrite=True) as f:
        f.write(blob)
