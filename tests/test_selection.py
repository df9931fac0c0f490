"""Selection policies: nested for every policy, blind to the pool's labels, k-center and its
uncertainty weighting doing what they say, the selection list's file, `gapkit select`, the
grid's selection axis and its report, and the list as a benchmark config's pool order."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_bench_sets
from typer.testing import CliRunner

from gapkit.bench import BenchConfig, Runner, load_data, write_outputs
from gapkit.bench.config import Grid
from gapkit.bench.selection import (
    POLICIES,
    PoolView,
    k_center,
    pool_view,
    rank_by_list,
    read_selection,
    select_faces,
    write_selection,
)
from gapkit.cli.main import app
from gapkit.errors import ConfigError, InputError
from gapkit.faceset import DataSource
from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.schemes import get_scheme
from gapkit.train import FaceCrops, Source, TrainConfig, train
from gapkit.train.detector import trained_detector


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("selection")
    return {k: DataSource(path=m) for k, m in tiny_bench_sets(root, n_train=30).items()} | {"root": root}


@pytest.fixture(scope="module")
def synthetic(sets):
    """A tiny synthetic model (trained on the synthetic set only) and its file."""
    from gapkit.faceset import load

    faces = load([sets["synthetic"]], scheme="ibug68")[0]
    cfg = TrainConfig(steps=20, batch_size=8, size=32, width=8)
    crops = FaceCrops(list(faces), 32)
    det = trained_detector(train([Source(crops)], cfg), cfg, [Source(crops)])
    det.save(sets["root"] / "syn.gkm")
    return det


def _pool(sets) -> list:
    return [r for r in read_manifest(sets["real_train"].path) if not hasattr(r, "reason")]


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_is_nested_and_a_full_ranking(sets, synthetic, policy):
    ranking = select_faces(_pool(sets), policy, synthetic.net, seed=1, size=32)
    n = len(_pool(sets))
    assert sorted(ranking.order.tolist()) == list(range(n)) and len(ranking.reasons) == n
    for small, big in ((5, 10), (10, 25), (1, n)):
        assert set(ranking.take(small)) <= set(ranking.take(big))


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_scrambled_hidden_labels_select_the_same_faces(sets, synthetic, policy):
    """Labels of faces not yet selected are never read: scrambling every point inside its own
    face (the face box, where the crop is cut, stays) changes nothing."""
    pool = _pool(sets)
    rng = np.random.default_rng(0)
    scrambled = []
    for r in pool:
        lo, hi = r.points.min(0), r.points.max(0)
        pts = rng.uniform(lo, hi, r.points.shape)
        pts[[np.argmin(r.points[:, 0]), np.argmax(r.points[:, 0])], 0] = lo[0], hi[0]
        pts[[np.argmin(r.points[:, 1]), np.argmax(r.points[:, 1])], 1] = lo[1], hi[1]
        scrambled.append(r.model_copy(update={"points": pts}))
    a = select_faces(pool, policy, synthetic.net, seed=2, size=32)
    b = select_faces(scrambled, policy, synthetic.net, seed=2, size=32)
    assert np.array_equal(a.order, b.order)
    # and the view itself never holds a label
    crops = FaceCrops(pool, 32)
    view = pool_view(synthetic.net, crops)
    moved = pool_view(synthetic.net, crops.with_points(np.zeros_like(crops.points)))
    assert np.array_equal(view.shapes, moved.shapes) and np.array_equal(view.embedding, moved.embedding)


def test_k_center_picks_the_farthest_point_each_time():
    x = np.array([[0.0, 0], [1, 0], [10, 0], [5, 0], [10.5, 0]])
    order, gaps = k_center(x, first=0)
    assert order.tolist()[:3] == [0, 4, 3] and np.isinf(gaps[0]) and gaps[1] == 10.5
    # a weight of zero ranks a point last however far it lies
    order, _ = k_center(x, first=0, weight=np.array([1, 1, 1, 1, 0.0]))
    assert order[1] == 2 and order[-1] == 4


def test_uncertain_spreads_its_picks_over_distinct_faces():
    """Two copies of the most uncertain face: the copy is not the second pick."""
    rng = np.random.default_rng(0)
    n = 30
    scheme = get_scheme("ibug68")
    mean = np.stack([np.cos(np.linspace(0, 6, 68)), np.sin(np.linspace(0, 6, 68))], -1) * 30 + 50
    s = mean + rng.normal(0, 1.0, (n, 68, 2))
    mirrored = s + rng.normal(0, 0.2, s.shape)
    mirrored[0] += 4.0  # face 0 and its duplicate 1: the model disagrees with itself most there
    s[1], mirrored[1] = s[0], mirrored[0]
    emb = rng.normal(size=(n, 8))
    emb[1] = emb[0]
    view = PoolView([f"f{i}" for i in range(n)], scheme, s, mirrored, np.zeros((n, 3)), emb)
    ranking = POLICIES["uncertain"].rank(n, view, 0)
    assert ranking.order[0] in (0, 1) and ranking.order[1] not in (0, 1)
    assert "flip disagreement" in ranking.reasons[0]


def test_selection_list_round_trip_and_errors(tmp_path):
    ranking = rank_by_list(["a", "b", "c", "d"], ["c", "a"], seed=0, source="x")
    assert ranking.order[:2].tolist() == [2, 0] and sorted(ranking.order.tolist()) == [0, 1, 2, 3]
    write_selection(tmp_path / "l.txt", ["a", "b", "c", "d"], ranking, 3, "test")
    assert read_selection(tmp_path / "l.txt") == ["c", "a", "abcd"[ranking.order[2]]]
    (tmp_path / "ids.txt").write_text("# plain ids\nb\nd\n")
    assert read_selection(tmp_path / "ids.txt") == ["b", "d"]
    (tmp_path / "bad.txt").write_text("1\tb\tok\nx\ty\n")
    with pytest.raises(InputError, match=r"bad.txt:2: a selection line"):
        read_selection(tmp_path / "bad.txt")
    (tmp_path / "dup.txt").write_text("b\nb\n")
    with pytest.raises(InputError, match="listed twice"):
        read_selection(tmp_path / "dup.txt")
    with pytest.raises(ConfigError, match="not in the real training pool"):
        rank_by_list(["a"], ["zz"], 0, "x")


def test_cli_select_writes_a_ranked_list_and_manifest_and_refuses_to_overwrite(sets, synthetic, tmp_path):
    args = ["select", str(sets["real_train"].path), "--n", "6", "--policy", "diverse",
            "--synthetic-model", str(sets["root"] / "syn.gkm"), "-o", str(tmp_path / "pick.txt")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ids = read_selection(tmp_path / "pick.txt")
    recs = list(read_manifest(tmp_path / "pick.txt.jsonl"))
    assert len(ids) == 6 and [r.id for r in recs] == ids
    assert [r.attributes["selection_rank"] for r in recs] == list(range(1, 7))
    assert all(r.attributes["selection_reason"] for r in recs)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    too_many = CliRunner().invoke(app, [*args[:3], "1000", *args[4:], "--overwrite"])
    assert too_many.exit_code == 2 and "more than the 30 faces" in too_many.output


def _cfg(sets, selection_list=None, **grid) -> BenchConfig:
    return BenchConfig(name="sel", real_train=sets["real_train"], real_test=sets["real_test"],
                       synthetic=[sets["synthetic"]], grid=Grid(seeds=[0], alphas=[0.5], **grid),
                       train=TrainConfig(steps=4, batch_size=8, size=32, width=4), selection_list=selection_list)


def test_grid_selection_axis_rows_and_report(sets, tmp_path):
    cfg = _cfg(sets, n_real=[5, 10], strategies=["real_only"], selection=["random", "diverse", "uncertain"])
    data = load_data(cfg)
    runner = Runner(cfg, tmp_path / "run")
    rows = runner.run(data)
    assert {(r.selection, r.n_real) for r in rows} == {(s, n) for s in ("random", "diverse", "uncertain")
                                                       for n in (5, 10)}
    for sel in ("diverse", "uncertain"):
        small, big = (set(next(r for r in rows if r.selection == sel and r.n_real == n).real_ids) for n in (5, 10))
        assert small <= big
    # random keeps the grid's old draw and cell names
    rnd = next(r for r in rows if r.selection == "random" and r.n_real == 5)
    perm = np.random.default_rng(0).permutation(len(data.pool))
    assert rnd.real_ids == [data.pool.ids[i] for i in np.sort(perm[:5])] and rnd.key == "real_only_n5_s0"
    write_outputs(rows, tmp_path / "run", "sel")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Which faces to label" in report and "real_only | diverse" in report


def test_a_selection_list_is_the_pool_order_of_a_benchmark(sets, tmp_path):
    pool_ids = [r.id for r in _pool(sets)]
    chosen = pool_ids[::-1][:10]
    (tmp_path / "list.txt").write_text("\n".join(chosen) + "\n")
    cfg = _cfg(sets, tmp_path / "list.txt", n_real=[4, 10], strategies=["real_only"], selection=["list"])
    rows = Runner(cfg, tmp_path / "run").run(load_data(cfg))
    assert {r.n_real: sorted(r.real_ids) for r in rows} == {4: sorted(chosen[:4]), 10: sorted(chosen)}
    with pytest.raises(ConfigError, match="go together"):
        BenchConfig(**(cfg.model_dump() | {"selection_list": None}))


def test_app_tags_the_selected_faces(sets, tmp_path):
    pytest.importorskip("fiftyone")
    import os

    os.environ.update({"FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true",
                       "FIFTYONE_DATABASE_VALIDATION": "false"})
    import gapkit.fiftyone as gfo

    pool = _pool(sets)
    write_manifest(pool, tmp_path / "pool.jsonl")
    picks = [pool[7].id, pool[2].id]
    ds, _ = gfo.build_dataset([tmp_path / "pool.jsonl"], "gapkit-test-selection", embeddings=None, selection=picks)
    try:
        view = ds.load_saved_view("selected")
        assert view.values("face_id") == picks and view.values("selection_rank") == [1, 2]
        assert len(ds.match_tags("selected")) == 2
    finally:
        ds.delete()


def test_unknown_policy_is_a_configuration_error(sets):
    with pytest.raises(ConfigError, match="unknown selection polic"):
        _cfg(sets, selection=["clever"])
    with pytest.raises(ConfigError, match="unknown selection policy"):
        select_faces(_pool(sets), "clever")


def test_cli_select_needs_a_pool(tmp_path):
    res = CliRunner().invoke(app, ["select", "--n", "3", "-o", str(tmp_path / "p.txt")])
    assert res.exit_code == 2 and "give the pool" in res.output and not (tmp_path / "p.txt").exists()
