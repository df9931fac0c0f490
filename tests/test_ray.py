"""The benchmark grid on a local Ray instance (2 CPUs): the same rows as the in-process run,
and a run killed mid-grid that resumes from its finished cells."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_bench_sets

from gapkit.bench import STRATEGIES, BenchConfig, Runner, collect, load_data

pytest.importorskip("ray")  # in the dev extra, so CI has it


def _rows(rows) -> dict:
    """Rows by cell, without their timings (the only thing a Ray run changes)."""
    out = {}
    for r in rows:
        d = r.model_dump()
        d.pop("time_s")
        if d.get("adapter"):
            d["adapter"].pop("fit_s")
        out[(r.strategy, r.alpha, r.n_real, r.seed)] = d
    return out


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("raygrid")
    sets = tiny_bench_sets(root)
    toml = root / "bench.toml"
    toml.write_text("\n".join([
        'name = "raytest"',
        *[f'[{"[synthetic]" if k == "synthetic" else k}]\npath = "{k}/manifest.jsonl"' for k in sets],
        "[grid]", "n_real = [6, 12]", "seeds = [0, 1]", "alphas = [0.5]",
        "[train]", "steps = 40", "batch_size = 8", "size = 32", "width = 4", ""]))
    cfg = BenchConfig.from_toml(toml)
    from gapkit.devices import set_threads

    set_threads(1)  # a Ray task uses one thread; the same arithmetic gives the same rows
    rows = Runner(cfg, root / "inproc").run(load_data(cfg))
    return root, toml, cfg, rows


def test_the_ray_plan_follows_what_strategies_declare(tmp_path, monkeypatch):
    """Tasks come from the strategy table: the seed's synthetic model with synthetic_only, one
    adapter task for label_adapt and data_adapt, a task per cell otherwise, each after the
    synthetic model where it needs it and after the models it reuses; a strategy added to the
    table (here one reusing data_adapt's model) is planned with no change to the planner."""
    from gapkit.bench.cell import Outcome, Strategy
    from gapkit.bench.config import Grid
    from gapkit.bench.distributed import _plan
    from gapkit.faceset import DataSource

    existing = ["real_only", "synthetic_only", "label_adapt", "data_adapt", "finetune", "mix"]
    monkeypatch.setitem(STRATEGIES, "added_here", Strategy("added_here", "one more", lambda c: Outcome({}, []),
                                                           needs=frozenset({"adapted"}), reuses=("data_adapt",)))
    ds = {k: DataSource(path=m) for k, m in tiny_bench_sets(tmp_path, n_train=12, n_test=4, n_synthetic=8).items()}
    cfg = BenchConfig(name="plan", real_train=ds["real_train"], real_test=ds["real_test"], synthetic=[ds["synthetic"]],
                      grid=Grid(n_real=[6], seeds=[0, 1], alphas=[0.25, 0.5], strategies=[*existing, "added_here"]))
    tasks = _plan(Runner(cfg, tmp_path / "run"), load_data(cfg))
    seed = lambda s: ("seed", s)  # noqa: E731
    adapter = lambda s: ("group", "adapter", s, 6, "random")  # noqa: E731
    cell = lambda name, s, a=None: ("cell", name, s, 6, a, "random")  # noqa: E731
    expected = [(seed(0), ["synthetic_only_n6_s0"], []), (seed(1), ["synthetic_only_n6_s1"], [])]
    for s in (0, 1):
        expected += [(cell("real_only", s), [f"real_only_n6_s{s}"], []),
                     (adapter(s), [f"label_adapt_n6_s{s}", f"data_adapt_n6_s{s}"], [seed(s)]),
                     (cell("finetune", s), [f"finetune_n6_s{s}"], [seed(s), adapter(s)]),
                     (cell("mix", s, 0.25), [f"mix_a0.25_n6_s{s}"], [seed(s)]),
                     (cell("mix", s, 0.5), [f"mix_a0.5_n6_s{s}"], [seed(s)]),
                     (cell("added_here", s), [f"added_here_n6_s{s}"], [seed(s), adapter(s)])]
    assert [(t.name, t.keys, t.after) for t in tasks] == expected
    assert [t.synthetic for t in tasks] == [True, True] + [False] * 12


def test_a_ray_run_gives_the_in_process_rows(grid):
    from gapkit.bench.distributed import run_on_ray

    root, _, cfg, rows = grid
    ray_rows = run_on_ray(cfg, root / "ray", load_data(cfg), address="local", num_cpus=2)
    per_grid = sum(len(cfg.grid.alphas) if s.per_alpha else 1 for s in STRATEGIES.values())
    assert len(rows) == 2 * 2 * per_grid and _rows(ray_rows) == _rows(rows)
    assert sorted(p.name for p in (root / "ray" / "models").glob("*.gkm")) == \
        sorted(p.name for p in (root / "inproc" / "models").glob("*.gkm"))


def test_a_killed_ray_run_resumes_from_its_finished_cells(grid):
    root, toml, _, rows = grid
    out = root / "runs"
    cmd = [str(Path(sys.executable).parent / "gapkit"), "benchmark", "--config", str(toml), "--out", str(out),
           "--name", "killed", "--ray", "local", "--threads", "1"]
    cells = out / "killed" / "cells"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(list(cells.glob("*.json"))) < 4:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no cells in 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.json")}
    assert 4 <= len(first) < len(rows)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming {out / 'killed'}" in again.stdout.replace("\n", "")
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in cells.glob("*.json")) if n in first} == first
    assert _rows(collect(out / "killed")) == _rows(rows)


def test_benchmark_quick_on_ray_matches_the_in_process_quick_run(tmp_path):
    gapkit = str(Path(sys.executable).parent / "gapkit")
    for name, extra in (("inproc", []), ("ray", ["--ray", "local"])):
        r = subprocess.run([gapkit, "benchmark", "--quick", "--threads", "1", "--out", str(tmp_path / name), *extra],
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    a, b = (collect(tmp_path / name / "default-sim-quick") for name in ("inproc", "ray"))
    assert len(a) >= 10 and _rows(a) == _rows(b)


def test_a_policy_that_looks_at_faces_waits_for_the_seeds_synthetic_model(tmp_path):
    """diverse ranks the pool through the synthetic model: its cells run after the seed task
    that trains it, while random cells wait for nothing."""
    from gapkit.bench.config import Grid
    from gapkit.bench.distributed import _plan
    from gapkit.faceset import DataSource

    ds = {k: DataSource(path=m) for k, m in tiny_bench_sets(tmp_path, n_train=12, n_test=4, n_synthetic=8).items()}
    cfg = BenchConfig(name="plan", real_train=ds["real_train"], real_test=ds["real_test"], synthetic=[ds["synthetic"]],
                      grid=Grid(n_real=[6], seeds=[0], strategies=["real_only"], selection=["random", "diverse"]))
    tasks = {t.name: t for t in _plan(Runner(cfg, tmp_path / "run"), load_data(cfg))}
    assert tasks[("cell", "real_only", 0, 6, None, "random")].after == []
    assert tasks[("cell", "real_only", 0, 6, None, "diverse")].after == [("seed", 0)]
    assert tasks[("cell", "real_only", 0, 6, None, "diverse")].keys == ["real_only_n6_s0_sel-diverse"]
