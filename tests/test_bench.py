"""The benchmark's wiring, read from the provenance each result row records: which data and
labels each strategy trained on, nested N_real subsets, no leakage, resume, and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_bench_sets

from gapkit.bench import STRATEGIES, BenchConfig, Runner, collect, load_data, write_outputs
from gapkit.bench.cell import Outcome, Strategy
from gapkit.bench.config import Grid
from gapkit.faceset import DataSource
from gapkit.train import TrainConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchdata")
    ds = {k: DataSource(path=m) for k, m in tiny_bench_sets(root).items()}
    cfg = BenchConfig(name="tiny", real_train=ds["real_train"], real_test=ds["real_test"], synthetic=[ds["synthetic"]],
                      grid=Grid(n_real=[6, 12], seeds=[0], alphas=[0.5]),
                      train=TrainConfig(steps=4, batch_size=8, size=32, width=4))
    out = root / "run"
    data = load_data(cfg)
    rows = Runner(cfg, out).run(data)
    return cfg, data, out, rows


def rows_of(rows, strategy, n=None):
    return [r for r in rows if r.strategy == strategy and (n is None or r.n_real == n)]


def test_every_strategy_and_cell_ran(tiny):
    _, _, _, rows = tiny
    assert {(r.strategy, r.n_real) for r in rows} == {(s, n) for s in STRATEGIES for n in (6, 12)}
    assert all(0 < r.nme_pct and len(r.per_face_nme) == 12 and r.normaliser == "inter_ocular" for r in rows)


def test_every_registered_strategy_has_a_row_below():
    assert set(STRATEGIES) == {row[0] for row in PROVENANCE}


# One row per strategy: the sets and labels it trains on, whether a cell's adapter is involved,
# and the model it starts from (a prefix), if any.
PROVENANCE = [
    ("real_only", ["real_train"], ["real"], False, None),
    ("synthetic_only", ["synthetic"], ["mapped"], False, None),
    ("label_adapt", ["synthetic"], ["mapped"], True, None),
    ("data_adapt", ["synthetic"], ["adapted"], True, None),
    ("mix", ["real_train", "synthetic"], ["real", "adapted"], True, None),
    ("finetune", ["real_train"], ["real"], True, "data_adapt_n{n}_s0"),
]


@pytest.mark.parametrize("strategy, sets, labels, adapter, init", PROVENANCE)
def test_each_strategy_trains_on_the_right_data_and_labels(tiny, strategy, sets, labels, adapter, init):
    _, data, _, rows = tiny
    assert rows_of(rows, strategy)
    for r in rows_of(rows, strategy):
        assert [t.set for t in r.train] == sets
        assert [t.labels for t in r.train] == labels
        for t in r.train:
            assert t.n == (r.n_real if t.set == "real_train" else len(data.synthetic))
        assert (r.adapter is not None) == adapter
        assert (r.init is None) if init is None else r.init.startswith(init.format(n=r.n_real))
    if strategy == "mix":
        assert all([t.share for t in r.train] == [0.5, 0.5] for r in rows_of(rows, "mix"))


def test_no_leakage_and_nested_subsets(tiny):
    _, data, _, rows = tiny
    test_ids = set(data.test.ids)
    for r in rows:
        assert len(r.real_ids) == r.n_real and not set(r.real_ids) & test_ids
        if r.adapter is not None:
            assert set(r.adapter.train_ids) <= set(r.real_ids)
    small, big = rows_of(rows, "real_only", 6)[0], rows_of(rows, "real_only", 12)[0]
    assert set(small.real_ids) < set(big.real_ids)
    assert len({r.test_ids_sha for r in rows}) == 1


def test_resume_recomputes_only_missing_cells(tiny):
    cfg, data, out, rows = tiny
    cells = sorted((out / "cells").glob("*.json"))
    victim = out / "cells" / "mix_a0.5_n12_s0.json"
    before = {p.name: p.stat().st_mtime_ns for p in cells if p != victim}
    victim.unlink()
    (out / "models" / "mix_a0.5_n12_s0.gkm").unlink()
    again = Runner(cfg, out).run(data)
    assert victim.is_file() and len(again) == len(rows)
    assert {p.name: p.stat().st_mtime_ns for p in cells if p != victim} == before


def test_a_changed_configuration_does_not_reuse_cells(tiny):
    cfg, _, out, _ = tiny
    other = cfg.model_copy(deep=True)
    other.train.steps += 1
    with pytest.raises(Exception, match="holds cells of another configuration"):
        Runner(other, out)


def test_outputs_are_written(tiny):
    _, _, out, rows = tiny
    paths = write_outputs(collect(out), out, "tiny")
    for name in ("report.md", "nme_vs_nreal.png", "ced.png", "equivalence.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert {p.name for p in paths} >= {"report.md", "ced.png"}
    report = (out / "report.md").read_text()
    assert "| real_only |" in report and "## Findings" in report and "N=12" in report
    assert len(json.loads((out / "results.json").read_text())) == len(rows)
    assert (out / "results.csv").read_text().splitlines()[0].startswith("strategy,alpha,n_real,seed,nme_pct")
    assert "Smoke test" not in report and "With 6 real images" in report


def test_a_smoke_run_states_no_findings(tiny, tmp_path):
    _, _, out, _ = tiny
    write_outputs(collect(out), tmp_path, "tiny", smoke=True)
    report = (tmp_path / "report.md").read_text()
    assert "Smoke test" in report and "None: this is a smoke test." in report and "With 6 real images" not in report


def test_config_from_toml_resolves_paths_and_rejects_unknown_keys(tmp_path):
    (tmp_path / "b.toml").write_text('name = "x"\n[real_train]\npath = "a"\n[real_test]\npath = "b"\n'
                                     '[[synthetic]]\npath = "c"\n[grid]\nn_real = [10, "all"]\n')
    cfg = BenchConfig.from_toml(tmp_path / "b.toml")
    assert cfg.real_train[0].path == tmp_path / "a" and cfg.grid.n_real == [10, "all"]
    (tmp_path / "bad.toml").write_text('[real_train]\npath = "a"\nbogus = 1\n')
    with pytest.raises(Exception, match="bad.toml"):
        BenchConfig.from_toml(tmp_path / "bad.toml")


def test_a_pool_of_two_folders_is_one_training_set(shared):
    from gapkit.bench.runner import _load

    cfg = BenchConfig.from_toml(Path(__file__).parents[1] / "examples/bench-300w.toml")
    assert [d.path.name for d in cfg.real_train] == ["300w", "300w_extra"] and cfg.detector_boxes
    assert [d.path.parent.name for d in cfg.synthetic][-1] == "sim-synthetic-3000"
    pool = _load(cfg.real_train, cfg.target_scheme, "real_train", print)
    test = _load(cfg.real_test, cfg.target_scheme, "real_test", print)
    assert len(pool) == 1675 and len({r.id for r in pool}) == 1675 and len(test) == 224
    assert not {r.image for r in pool} & {r.image for r in test}


def test_command_line_overrides_replace_what_they_name_and_are_validated(tiny):
    from gapkit.bench import override
    from gapkit.errors import ConfigError

    cfg = tiny[0]
    o = override(cfg, steps=7, size=48, seeds=[3, 4], n_real=[5, "all"], strategies=["real_only"])
    assert (o.train.steps, o.train.size, o.grid.seeds, o.grid.n_real, o.grid.strategies) == (
        7, 48, [3, 4], [5, "all"], ["real_only"])
    assert o.train.batch_size == cfg.train.batch_size and cfg.train.steps == 4  # the original is untouched
    assert not o.detector_boxes and override(cfg, detector_boxes=True).detector_boxes
    q = override(cfg.model_copy(update={"grid": Grid(n_real=[1, 2, 3], seeds=[0, 1])}), quick=True)
    assert q.grid.n_real == [1, 2] and q.grid.seeds == [0] and q.train.steps <= 30
    with pytest.raises(ConfigError, match="unknown strategies"):
        override(cfg, strategies=["best_one"])
    with pytest.raises(ConfigError, match="steps"):
        override(cfg, steps=0)


def test_benchmark_cli_overrides_and_threads(tiny, tmp_path):
    from typer.testing import CliRunner

    from gapkit.cli.main import app

    cfg = tiny[0]
    toml = tmp_path / "b.toml"
    sets = lambda name, ds: "".join(f'[[{name}]]\npath = "{d.path}"\n' for d in ds)  # noqa: E731
    toml.write_text(sets("real_train", cfg.real_train) + sets("real_test", cfg.real_test)
                    + sets("synthetic", cfg.synthetic) + "[train]\nsteps = 3\nbatch_size = 4\nsize = 32\nwidth = 4\n")
    args = ["benchmark", "--config", str(toml), "--out", str(tmp_path / "runs"), "--name", "o"]
    import re

    import torch

    threads = torch.get_num_threads()
    try:
        r = CliRunner().invoke(app, [*args, "--steps", "2", "--n-real", "4", "--seeds", "5",
                                     "--strategies", "real_only,synthetic_only", "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    assert "torch uses 1 CPU thread" in r.output and re.search(r"real_only n=4 seed=5: .*\(\d+ s\)", r.output)
    cells = sorted(p.name for p in (tmp_path / "runs/o/cells").glob("*.json"))
    assert cells == ["real_only_n4_s5.json", "synthetic_only_n4_s5.json"]
    assert CliRunner().invoke(app, [*args, "--strategies", "nope"]).exit_code == 2
    assert CliRunner().invoke(app, [*args, "--threads", "0"]).exit_code == 2
    assert CliRunner().invoke(app, [*args, "--n-real", "ten"]).exit_code == 2


def _sneaky(cell):
    return Outcome(cell.adapter.predict(cell.synthetic_on_test), [])


def _trains_undeclared(cell):
    return Outcome(cell.predict(cell.train([cell.real])), [])


def _reuses_undeclared(cell):
    return Outcome(cell.predict(cell.train([cell.real], of="real_only")), [])


@pytest.mark.parametrize("declared, match", [
    (Strategy("real_only", "undeclared need", _sneaky), "does not declare it in its needs"),
    (Strategy("real_only", "undeclared model", _trains_undeclared, model=None, no_model="x"),
     "does not declare model='own'"),
    (Strategy("real_only", "undeclared reuse", _reuses_undeclared), "does not declare it in its reuses"),
])
def test_a_strategy_cannot_use_what_it_did_not_declare(tiny, monkeypatch, declared, match):
    from gapkit.errors import ConfigError

    cfg, data, out, _ = tiny
    monkeypatch.setitem(STRATEGIES, "real_only", declared)
    runner = Runner(cfg.model_copy(update={"grid": Grid(n_real=[6], seeds=[9], strategies=["real_only"])}),
                    out.parent / f"sneaky-{declared.label.split()[-1]}")
    with pytest.raises(ConfigError, match=match):
        runner.run(data)


def test_each_strategy_model_file_is_the_one_it_declares(tiny):
    """The model files of a run are exactly the ones the strategies declare as their detectors
    (finetune's reused data_adapt model is data_adapt's own), each recording its strategy."""
    from gapkit.train.detector import Detector

    _, _, out, rows = tiny
    declared = {}
    for r in rows:
        s = STRATEGIES[r.strategy]
        if s.model is not None:
            declared[s.model_key(r.n_real, r.seed, r.alpha)] = r.strategy
    assert {p.stem for p in (out / "models").glob("*.gkm")} == set(declared)
    assert "synthetic_mapped_s0" in declared and "label_adapt_n6_s0" not in declared
    for key, name in declared.items():
        assert Detector.load(out / "models" / f"{key}.gkm").meta.strategy == name


def test_fresh_discards_exactly_what_the_run_wrote(tiny, tmp_path):
    import shutil

    _, _, out, rows = tiny
    run = shutil.copytree(out, tmp_path / "run")
    wrote = [*(run / "cells").iterdir(), *(run / "models").iterdir()]
    mine = [run / "cells" / "notes.json", run / "models" / "label_adapt_best.gkm", run / "models" / "real_only.pt"]
    for p in mine:
        p.write_text("mine")
    assert len(wrote) > len(rows) and Runner.discard(run) == len(wrote)
    assert all(p.is_file() for p in mine) and not any(p.exists() for p in wrote)


@pytest.mark.parametrize("shift, separates", [(0.0, False), (0.02, True), (-0.02, True)])
def test_paired_difference_interval_and_ties(shift, separates):
    import numpy as np

    from gapkit.bench.stats import cell_interval, difference

    rng = np.random.default_rng(0)
    a = rng.uniform(0.03, 0.08, size=(3, 200))
    b = a + shift + rng.normal(0, 0.002, a.shape)
    d = difference(a, b)
    assert d.separates() == separates and d.lo <= d.mean <= d.hi
    assert abs(d.mean + 100 * shift) < 0.1
    c = cell_interval(a)
    assert c.lo < 100 * a.mean() < c.hi and c.hi - c.lo < 1.0
    assert cell_interval(np.full((2, 50), 0.05)).lo == pytest.approx(5.0)  # no spread, no width


def test_a_tie_is_called_a_tie_and_equivalence_is_a_grid_bound():
    import numpy as np

    from gapkit.bench.report import findings
    from gapkit.bench.results import CellResult

    rng = np.random.default_rng(1)
    faces = rng.uniform(0.03, 0.08, size=100)

    def row(strategy, n, pf):
        return CellResult(strategy=strategy, alpha=None, n_real=n, seed=0, test_set="t", test_n=100,
                          test_ids_sha="x", real_ids=[], normaliser="inter_ocular", threshold=0.08,
                          nme_pct=100 * pf.mean(), fr=0, auc=0, per_face_nme=list(pf), time_s=0, train=[])

    rows = [row("real_only", 10, faces + 0.02), row("real_only", 100, faces),
            row("finetune", 10, faces + 1e-5), row("finetune", 100, faces + rng.normal(0, 0.01, 100))]
    text = " ".join(findings(rows))
    assert "With 10 real images, finetune is better than real only by 2.00 points" in text
    assert "With 100 real images no strategy beats real only (ties: finetune)" in text
    assert "N=100" in text and "more than" not in text
    assert "best" not in text


def test_data_adaptation_rewrites_what_the_adapter_was_fitted_on(tiny):
    """The adapter is fitted on the synthetic model's predictions (on the N_real faces), so the
    adapted synthetic set is the adapter applied to that model's predictions on the synthetic
    faces, never to their clean labels; each row says so."""
    import numpy as np

    from gapkit.bench.cell import Cell
    from gapkit.train import predict

    cfg, data, out, rows = tiny
    runner = Runner(cfg, out)
    per_seed: dict = {}
    shared: dict = {}
    idx = np.sort(np.random.default_rng(0).permutation(len(data.pool))[:6])
    cell = Cell(runner, data, STRATEGIES["data_adapt"], 6, 0, None, idx, shared)
    runner._prepare(cell, per_seed)
    on_syn = predict(shared["synthetic_model"].net, data.synthetic, flip=cfg.train.flip_test)
    expected = data.synthetic.with_points(shared["adapter"].predict(on_syn)).points
    np.testing.assert_allclose(shared["adapted"].crops.points, expected)
    labels = data.synthetic.with_points(shared["adapter"].predict(
        data.synthetic.to_image(np.arange(len(data.synthetic)), data.synthetic.points))).points
    assert not np.allclose(shared["adapted"].crops.points, labels)
    for r in rows:
        if r.strategy in ("data_adapt", "mix", "finetune"):
            assert "predictions on the synthetic training faces" in r.adapter.applied_to
        elif r.strategy == "label_adapt":
            assert r.adapter.applied_to is None


def test_train_refine_gives_every_grid_model_its_second_stage(tiny, tmp_path):
    """[train.refine] in a config: each model of the grid is two-stage, its file says so, the
    test predictions are stage 1's refined, and a run without it still resumes as before."""
    from gapkit.refine import RefineConfig
    from gapkit.train.detector import Detector
    from gapkit.train.trainer import TwoStage

    cfg, data, out, rows = tiny
    refiner = RefineConfig(method="cnn", steps=3, size=32, width=8, batch_size=4, small_data=0)
    two = cfg.model_copy(update={"grid": Grid(n_real=[12], seeds=[0], strategies=["real_only"]),
                                 "train": cfg.train.model_copy(update={"refine": TwoStage(refiner=refiner)})})
    runner = Runner(two, tmp_path / "two")
    (row,) = runner.run(data)
    det = Detector.load(tmp_path / "two" / "models" / "real_only_n12_s0.gkm")
    assert det.meta.refine is not None and det.meta.train["refine"]["refiner"]["steps"] == 3
    one = rows_of(rows, "real_only", 12)[0]
    # stage 1 is the same training as the one-stage grid's (same data, seed and settings)
    assert row.n_real == one.n_real and row.train == one.train
    crops = data.test_crops()["labels"]
    stage1 = runner.predict_crops(Detector(det.net, det.meta), crops)
    # kept (on one held-out face here): the test predictions are refined ones; else stage 1's
    assert np.allclose(runner.predict_crops(det, crops), stage1) == (det.refiner is None)
    assert det.meta.refine["used"] == (det.refiner is not None)
    assert "refine" not in json.loads((out / "config.json").read_text())["train"]  # old runs resume
