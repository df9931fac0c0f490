"""LabelAdapter and `gapkit adapt`: recovery of a known non-linear label gap, capacity
control with few pairs, exact save/load, bad input, and the CLI end to end."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.adapt import AdapterError, FitConfig, LabelAdapter, pair_records
from gapkit.cli.main import app
from gapkit.errors import ConfigError
from gapkit.formats.manifest import write_manifest
from gapkit.metrics import nme
from gapkit.records import FaceRecord
from gapkit.schemes import get_scheme

IBUG = get_scheme("ibug68")


def gap_problem(n: int, seed: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Pairs with a known non-linear label gap: the jaw slides with the square of a 'yaw'
    shape coefficient and the brows move with its sine, under random similarities."""
    from fixtures.make_fixtures import face68

    rng = np.random.default_rng(seed)
    base = face68() - face68().mean(axis=0)
    modes = np.random.default_rng(123).normal(size=(3, 68, 2)) * 0.03
    c = rng.uniform(-1, 1, size=(n, 3))
    src = base[None] + np.einsum("nm,mkj->nkj", c, modes)
    tgt = src.copy()
    tgt[:, :17, 0] += 0.24 * np.abs(c[:, :1]) * c[:, :1]
    tgt[:, 17:27, 1] -= 0.03 * np.sin(3 * c[:, 1:2])
    ang, s, t = rng.uniform(-0.5, 0.5, n), rng.uniform(80, 120, n), rng.uniform(100, 200, (n, 2))
    rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2)

    def place(p):
        return s[:, None, None] * np.einsum("nkj,nij->nki", p, rot) + t[:, None]

    return place(src) + rng.normal(size=src.shape) * noise, place(tgt)


@pytest.fixture(scope="module")
def test_set():
    return gap_problem(1000, seed=99)


def score(adapter: LabelAdapter, data) -> float:
    return float(100 * nme(adapter.predict(data[0]), data[1], IBUG).mean())


def fitted(src, tgt, **cfg) -> tuple[LabelAdapter, object]:
    a = LabelAdapter("ibug68", "ibug68")
    rep = a.fit(src, tgt, FitConfig(**cfg))
    return a, rep


def test_recovers_a_nonlinear_gap_and_beats_linear_with_plenty_of_data(test_set):
    src, tgt = gap_problem(1500, seed=1)
    lin, _ = fitted(src, tgt, head="linear")
    auto, rep = fitted(src, tgt, head="auto")
    assert rep.head == "mlp"
    e_lin, e_auto = score(lin, test_set), score(auto, test_set)
    assert e_auto < 0.5 * e_lin, (e_auto, e_lin)
    assert e_auto < 0.6  # percent of inter-ocular distance; the source noise alone is ~0.15%


def test_with_30_pairs_it_is_no_worse_than_linear(test_set):
    src, tgt = gap_problem(30, seed=2)
    lin, _ = fitted(src, tgt, head="linear")
    auto, rep = fitted(src, tgt, head="auto")
    assert rep.cv["folds"] == 5  # small data: the head is chosen by cross-validation
    assert score(auto, test_set) <= 1.02 * score(lin, test_set)


def test_with_few_pairs_the_local_prior_keeps_the_faces_own_shape():
    # Target points a fixed blend of neighbouring source points, on faces whose shape varies in
    # 20 directions: 12 pairs cannot teach a ridge from the mean shape, the local prior needs few.
    from fixtures.make_fixtures import face68

    rng = np.random.default_rng(5)
    base = face68()
    modes = np.random.default_rng(6).normal(size=(20, 68, 2)) * 0.01
    dist = np.linalg.norm(base[:, None] - base[None], axis=-1) + np.eye(68)
    nearest = dist.argmin(axis=1)

    def faces(n):
        src = 100 * (base[None] + np.einsum("nm,mkj->nkj", rng.uniform(-1, 1, (n, 20)), modes))
        tgt = 0.7 * src + 0.3 * src[:, nearest]
        return src + rng.normal(size=src.shape) * 0.2, tgt

    train, test = faces(12), faces(300)
    err = {k: float(100 * nme(fitted(*train, head="linear", local_neighbours=k)[0].predict(test[0]), test[1],
                              IBUG).mean()) for k in (0, 8)}
    assert err[8] < 0.3 * err[0], err


def test_adapter_beats_the_mean_shape_baseline(test_set):
    src, tgt = gap_problem(200, seed=3)
    a, _ = fitted(src, tgt, head="linear")
    base = float(100 * nme(a.mean_shape_baseline(test_set[0]), test_set[1], IBUG).mean())
    assert score(a, test_set) < 0.5 * base


def test_fit_is_deterministic_for_a_seed():
    src, tgt = gap_problem(120, seed=4)
    a, _ = fitted(src, tgt, head="mlp", epochs=20)
    b, _ = fitted(src, tgt, head="mlp", epochs=20)
    np.testing.assert_array_equal(a.predict(src), b.predict(src))


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_save_load_round_trips_exactly(tmp_path, head):
    src, tgt = gap_problem(80, seed=5)
    a, _ = fitted(src, tgt, head=head, epochs=15)
    a.save(tmp_path / "a.gka")
    b = LabelAdapter.load(tmp_path / "a.gka", source="ibug68", target="ibug68")
    np.testing.assert_array_equal(a.predict(src), b.predict(src))
    meta = json.loads(zipfile.ZipFile(tmp_path / "a.gka").read("meta.json"))
    assert meta["source_scheme"] == "ibug68" and meta["training_pairs"] == 80 and meta["head"] == head
    assert len(meta["mean_source"]) == 68 and meta["val_nme_pct"] > 0
    with pytest.raises(Exception, match="exists"):
        a.save(tmp_path / "a.gka")


def test_load_refuses_other_schemes_and_other_files(tmp_path):
    src, tgt = gap_problem(40, seed=6)
    a, _ = fitted(src, tgt, head="linear")
    a.save(tmp_path / "a.gka")
    with pytest.raises(AdapterError, match="expects source scheme 'ibug68'.*'wflw98'"):
        LabelAdapter.load(tmp_path / "a.gka", source="wflw98")
    (tmp_path / "junk.gka").write_text("not a zip")
    with pytest.raises(AdapterError, match="junk.gka: not a readable gapkit adapter file"):
        LabelAdapter.load(tmp_path / "junk.gka")


def test_other_point_counts_map_through(test_set):
    # A 98-point source (WFLW layout, derived from the 68-point shape) to 68 points.
    from fixtures.make_fixtures import wflw98

    src68, tgt = gap_problem(300, seed=7)
    a = LabelAdapter("wflw98", "ibug68")
    a.fit(np.stack([wflw98(p) for p in src68]), tgt, FitConfig(head="linear"))
    pred = a.predict(np.stack([wflw98(p) for p in test_set[0]]))
    assert pred.shape == (1000, 68, 2)
    assert 100 * nme(pred, test_set[1], IBUG).mean() < 2.0


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.__setitem__((3, slice(None)), np.nan), "#3: fewer than 3 present points"),
    (lambda s: s.__setitem__(5, 7.0), "#5: degenerate shape"),
    (lambda s: s.__setitem__((0, 0, 0), np.inf), "infinite"),
])
def test_bad_shapes_are_named(mutate, message):
    src, tgt = gap_problem(20, seed=8)
    mutate(src)
    with pytest.raises(AdapterError, match=message):
        LabelAdapter("ibug68", "ibug68").fit(src, tgt)


def test_missing_target_points_are_left_out_not_fatal(test_set):
    src, tgt = gap_problem(150, seed=9)
    tgt[::3, 5] = np.nan
    a, _ = fitted(src, tgt, head="mlp", epochs=10)
    assert np.isfinite(a.predict(test_set[0])).all()


def test_cuda_request_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    src, tgt = gap_problem(20, seed=10)
    with pytest.raises(ConfigError, match="no CUDA device"):
        LabelAdapter("ibug68", "ibug68").fit(src, tgt, FitConfig(device="cuda"))


def _records(points: np.ndarray, scheme: str, ids: list[str]) -> list[FaceRecord]:
    return [FaceRecord(id=i, image=f"/nowhere/{i}.png", width=400, height=400, scheme=scheme, points=p,
                       split="train" if k % 4 else "test")
            for k, (i, p) in enumerate(zip(ids, points, strict=True))]


def test_pairing_reports_one_sided_ids_and_refuses_no_overlap():
    src, tgt = gap_problem(10, seed=11)
    ids = [f"f{i}" for i in range(10)]
    p = pair_records(_records(src[:8], "ibug68", ids[:8]), _records(tgt[2:], "ibug68", ids[2:]))
    assert p.ids == ids[2:8] and p.only_source == ["f0", "f1"] and p.only_target == ["f8", "f9"]
    with pytest.raises(AdapterError, match="no face id is in both"):
        pair_records(_records(src[:2], "ibug68", ids[:2]), _records(tgt[2:4], "ibug68", ids[2:4]))
    mixed = _records(src[:2], "ibug68", ids[:2]) + _records(src[:2, :5].repeat(1, 0)[:, [0] * 5], "dlib5",
                                                             ["x", "y"])
    with pytest.raises(AdapterError, match="source records mix schemes"):
        pair_records(mixed, _records(tgt, "ibug68", ids))


def test_cli_fit_apply_eval(tmp_path):
    src, tgt = gap_problem(200, seed=12)
    ids = [f"face{i:03d}" for i in range(200)]
    write_manifest(_records(src, "ibug68", ids), tmp_path / "src.jsonl")
    write_manifest(_records(tgt[:190], "ibug68", ids[:190]), tmp_path / "tgt.jsonl")
    run = CliRunner().invoke
    r = run(app, ["adapt", "fit", "--source", str(tmp_path / "src.jsonl"), "--target", str(tmp_path / "tgt.jsonl"),
                  "-o", str(tmp_path / "a.gka"), "--split", "train", "--epochs", "30"])
    assert r.exit_code == 0, r.output
    assert "142 pairs" in r.output  # 3 of every 4 of the 190 labelled faces are "train"
    r = run(app, ["adapt", "eval", str(tmp_path / "a.gka"), "--source", str(tmp_path / "src.jsonl"),
                  "--target", str(tmp_path / "tgt.jsonl"), "--split", "test", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["method"].split(" ")[0]: row for row in json.loads(r.output[r.output.index("{"):])["rows"]}
    assert set(rows) == {"mapping", "mean-shape", "adapter"}
    assert rows["adapter"]["nme_pct"] < rows["mapping"]["nme_pct"]
    assert rows["adapter"]["normaliser"] == "inter_ocular"
    r = run(app, ["adapt", "apply", str(tmp_path / "a.gka"), str(tmp_path / "src.jsonl"), str(tmp_path / "out.jsonl")])
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 200 and json.loads(lines[0])["attributes"]["adapter"] == "a.gka"
    r = run(app, ["adapt", "apply", str(tmp_path / "a.gka"), str(tmp_path / "src.jsonl"), str(tmp_path / "out.jsonl")])
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_cli_eval_refuses_mismatched_schemes(tmp_path):
    src, tgt = gap_problem(30, seed=13)
    ids = [f"f{i}" for i in range(30)]
    write_manifest(_records(src, "ibug68", ids), tmp_path / "src.jsonl")
    write_manifest(_records(tgt, "ibug68", ids), tmp_path / "tgt.jsonl")
    a = LabelAdapter("wflw98", "ibug68")
    from fixtures.make_fixtures import wflw98

    a.fit(np.stack([wflw98(p) for p in src[:10]]), tgt[:10], FitConfig(head="linear"))
    a.save(tmp_path / "w.gka")
    r = CliRunner().invoke(app, ["adapt", "eval", str(tmp_path / "w.gka"), "--source", str(tmp_path / "src.jsonl"),
                                 "--target", str(tmp_path / "tgt.jsonl")])
    assert r.exit_code == 2 and "expects source scheme 'wflw98'" in r.output


def depth_problem(n: int, seed: int):
    """The jaw's label moves with a per-face depth signal the 2-D shape does not carry."""
    src, tgt = gap_problem(n, seed, noise=0.1)
    rng = np.random.default_rng(seed + 1)
    d = rng.uniform(-1, 1, n)
    z = d[:, None] * np.linspace(-30, 30, 68)[None] + rng.normal(0, 0.5, (n, 68))
    eye = np.linalg.norm(tgt[:, 36] - tgt[:, 45], axis=1)
    tgt = tgt.copy()
    tgt[:, :17, 0] += 0.25 * eye[:, None] * d[:, None]
    return src, tgt, z


def test_source_depth_reaches_what_the_2d_shape_cannot(tmp_path):
    src, tgt, z = depth_problem(400, seed=21)
    t_src, t_tgt, t_z = depth_problem(200, seed=22)
    flat = LabelAdapter("ibug68", "ibug68")
    flat.fit(src, tgt, FitConfig(head="linear"))
    deep = LabelAdapter("ibug68", "ibug68")
    deep.fit(src, tgt, FitConfig(head="linear"), source_depth=z)
    e_flat = float(100 * nme(flat.predict(t_src), t_tgt, IBUG).mean())
    e_deep = float(100 * nme(deep.predict(t_src, t_z), t_tgt, IBUG).mean())
    assert e_deep < 0.6 * e_flat
    with pytest.raises(AdapterError, match="depth"):
        deep.predict(t_src)
    with pytest.raises(AdapterError, match="depth has shape"):
        deep.predict(t_src, t_z[:, :10])
    deep.save(tmp_path / "z.gka")
    back = LabelAdapter.load(tmp_path / "z.gka")
    assert back.depth and back.meta["source_depth"] is True
    np.testing.assert_array_equal(back.predict(t_src, t_z), deep.predict(t_src, t_z))


def test_cli_depth_from_record_attributes(tmp_path):
    src, tgt, z = depth_problem(120, seed=23)
    ids = [f"f{i}" for i in range(120)]
    recs = _records(src, "ibug68", ids)
    with_z = [r.model_copy(update={"attributes": {"z": list(map(float, zz))}}) for r, zz in zip(recs, z, strict=True)]
    write_manifest(with_z, tmp_path / "src.jsonl")
    write_manifest(recs, tmp_path / "flat.jsonl")
    write_manifest(_records(tgt, "ibug68", ids), tmp_path / "tgt.jsonl")
    run = CliRunner().invoke
    r = run(app, ["adapt", "fit", "--source", str(tmp_path / "flat.jsonl"), "--target", str(tmp_path / "tgt.jsonl"),
                  "-o", str(tmp_path / "a.gka"), "--depth"])
    assert r.exit_code == 2 and "--depth needs a depth" in r.output
    r = run(app, ["adapt", "fit", "--source", str(tmp_path / "src.jsonl"), "--target", str(tmp_path / "tgt.jsonl"),
                  "-o", str(tmp_path / "a.gka"), "--depth", "--head", "linear"])
    assert r.exit_code == 0 and "with depth" in r.output, r.output
    r = run(app, ["adapt", "apply", str(tmp_path / "a.gka"), str(tmp_path / "flat.jsonl"), str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "attributes z" in r.output
    r = run(app, ["adapt", "apply", str(tmp_path / "a.gka"), str(tmp_path / "src.jsonl"), str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0, r.output
    # A depth of the wrong length is named with its record.
    bad = list(with_z)
    bad[3] = bad[3].model_copy(update={"attributes": {"z": [0.0] * 5}})
    write_manifest(bad, tmp_path / "bad.jsonl")
    r = run(app, ["adapt", "eval", str(tmp_path / "a.gka"), "--source", str(tmp_path / "bad.jsonl"),
                  "--target", str(tmp_path / "tgt.jsonl")])
    assert r.exit_code == 2 and "record f3: attributes z must be 68" in r.output
