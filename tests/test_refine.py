"""The label adapter's image refinement stage, both kinds (CNN and descriptor cascade): it
recovers a per-point offset that only the image shows, falls back to shape-only when the images carry nothing, survives save/load exactly,
and reports missing images; `gapkit adapt fit --images`, `eval` and `apply` end to end."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.adapt import AdapterError, FitConfig, LabelAdapter
from gapkit.cli.main import app
from gapkit.faceset import FaceSet
from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.metrics import nme
from gapkit.records import FaceRecord, chirality
from gapkit.refine import RefineConfig
from gapkit.schemes import get_scheme

SCHEME = get_scheme("aflw19")
TINY = dict(method="cnn", size=48, width=8, steps=250, batch_size=16, lr=3e-3, device="cpu")
TINY_CASCADE = dict(method="cascade", cascade_size=64, cascade_cells=(4.0, 2.0), cascade_samples=600, device="cpu")


def template(seed: int = 5) -> np.ndarray:
    """(K, 2) points in [-1, 1], mirror-symmetric as the scheme's flip pairs say, at least 0.3 apart."""
    rng = np.random.default_rng(seed)
    k = SCHEME.num_points
    while True:
        pts = np.zeros((k, 2))
        for i, j in enumerate(SCHEME.flip):
            if i < j or i == j:
                x = 0.0 if i == j else rng.uniform(0.15, 1.0)
                y = rng.uniform(-1, 1)
                pts[i], pts[j] = (x, y), (-x, y)
        d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(k) * 9
        if d.min() > 0.3:
            # The subject's right eye on the image's left, as records require.
            return pts * [[-1, 1]] if chirality(pts, SCHEME) < 0 else pts


def dot_faces(root, n: int, seed: int, offset: float = 2.5, dots: bool = True):
    """Faces drawn as one dot per labelled point on noise. The source points are the labels
    moved by a random per-point offset: no shape map can undo it, the dots show it."""
    rng = np.random.default_rng(seed)
    base = template()
    root.mkdir(parents=True, exist_ok=True)
    src, tgt, images = [], [], []
    for i in range(n):
        a, s = rng.uniform(-0.3, 0.3), rng.uniform(22, 28)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        t = base @ rot.T * s + rng.uniform(42, 54, 2) + rng.normal(0, 0.6, base.shape)
        img = rng.normal(110, 12, (96, 96)).clip(0, 255).astype(np.uint8)
        if dots:
            for x, y in t:
                cv2.circle(img, (int(round(x * 4)), int(round(y * 4))), 6, 250, -1, cv2.LINE_AA, shift=2)
        path = root / f"face_{i:03d}.png"
        cv2.imwrite(str(path), img)
        tgt.append(t)
        src.append(t + rng.normal(0, offset, t.shape))
        images.append(str(path))
    return np.array(src), np.array(tgt), images


def score(pred: np.ndarray, tgt: np.ndarray) -> float:
    return float(100 * nme(pred, tgt, SCHEME, "inter_ocular").mean())


def fitted(src, tgt, images, base=TINY, **cfg) -> tuple[LabelAdapter, object]:
    a = LabelAdapter("aflw19", "aflw19", normaliser="inter_ocular")
    a.fit(src, tgt, FitConfig(head="linear"))
    rep = a.fit_images(src, tgt, images, RefineConfig(**{**base, **cfg}))
    return a, rep


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    root = tmp_path_factory.mktemp("dots")
    train = dot_faces(root / "train", 120, seed=1)
    test = dot_faces(root / "test", 40, seed=2)
    adapter, rep = fitted(*train, small_data=0)
    return adapter, rep, train, test, root


@pytest.fixture(scope="module")
def cascade_dots(dots):
    *_, train, test, root = dots
    adapter, rep = fitted(*train, base=TINY_CASCADE)
    return adapter, rep, train, test, root


# A random 2.5 px offset a point: no shape map undoes it, the dots show it (measured: 3.4%
# shape-only; refined 0.4% by the CNN, 0.3% by the cascade).
@pytest.mark.parametrize("kind", ["dots", "cascade_dots"])
def test_refinement_recovers_an_offset_only_the_image_shows(request, kind):
    adapter, rep, _, (src, tgt, images), _ = request.getfixturevalue(kind)
    shape_only = score(adapter.predict(src), tgt)
    pred, refined, problems = adapter.predict_images(src, images)
    assert rep.used and adapter.refiner is not None
    assert rep.method == adapter.refiner.method == adapter.meta["refine"]["method"]
    assert refined.all() and not problems
    assert shape_only > 2
    assert score(pred, tgt) < 0.3 * shape_only
    assert rep.refined_nme_pct < rep.shape_nme_pct


def test_the_cnn_learns_as_well_in_float32_as_in_bf16_autocast(dots):
    # amp (the default) takes bfloat16 only where the device computes it natively
    # (devices.bf16_native); elsewhere both fits run float32.
    bf16, _, train, (src, tgt, images), _ = dots
    f32, rep = fitted(*train, small_data=0, amp=False)
    assert rep.used and bf16.refiner.cfg.amp and not f32.refiner.cfg.amp
    shape_only = score(f32.predict(src), tgt)
    for adapter in (bf16, f32):
        assert score(adapter.predict_images(src, images)[0], tgt) < 0.3 * shape_only


def test_auto_fits_the_cascade_on_few_pairs_and_keeps_the_better_kind_on_more(dots):
    *_, (src, tgt, images), _ = dots
    _, few = fitted(src[:60], tgt[:60], images[:60], base={**TINY, **TINY_CASCADE}, method="auto")
    assert few.how.endswith("cv") and list(few.candidates) == ["cascade"] and few.method == "cascade"
    _, more = fitted(src, tgt, images, base={**TINY, **TINY_CASCADE}, method="auto", small_data=30, steps=60)
    assert more.how.endswith("held out") and set(more.candidates) == {"cnn", "cascade"}
    assert more.method == min(more.candidates, key=more.candidates.get)
    assert more.refined_nme_pct == pytest.approx(more.candidates[more.method], abs=1e-4)


def test_refinement_falls_back_when_cross_validation_says_it_does_not_help(tmp_path):
    # Exact source points and images with nothing in them: the shape adapter is already right.
    src, tgt, images = dot_faces(tmp_path, 24, seed=3, offset=0.0, dots=False)
    adapter, rep = fitted(src, tgt, images, steps=60)
    assert rep.how.endswith("cv") and not rep.used
    assert adapter.refiner is None and adapter.meta["refine"]["used"] is False
    pred, refined, _ = adapter.predict_images(src, images)
    np.testing.assert_array_equal(pred, adapter.predict(src))
    assert not refined.any()
    # The decision is kept in the file, with no refinement weights.
    adapter.save(tmp_path / "a.gka")
    back = LabelAdapter.load(tmp_path / "a.gka")
    assert back.refiner is None and back.meta["refine"]["how"] == rep.how


@pytest.mark.parametrize("kind", ["dots", "cascade_dots"])
def test_save_load_round_trip_is_exact(request, kind, tmp_path):
    adapter, _, _, (src, _, images), _ = request.getfixturevalue(kind)
    adapter.save(tmp_path / "r.gka")
    back = LabelAdapter.load(tmp_path / "r.gka")
    np.testing.assert_array_equal(back.predict_images(src, images)[0], adapter.predict_images(src, images)[0])
    assert back.meta["refine"]["used"] and back.refiner.cfg == adapter.refiner.cfg
    assert back.refiner.method == adapter.refiner.method


@pytest.mark.parametrize("kind, weight, setting, value", [
    ("dots", "out_w", "width", 12), ("cascade_dots", "weight", "cascade_stages", 5)])
@pytest.mark.parametrize("damage", ["drop_weight", "bad_shape", "bad_config"])
def test_a_broken_refinement_stage_is_refused(request, tmp_path, kind, weight, setting, value, damage):
    adapter, *_ = request.getfixturevalue(kind)
    good = tmp_path / "good.gka"
    adapter.save(good)
    with zipfile.ZipFile(good) as z:
        meta = json.loads(z.read("meta.json"))
        arrays = dict(np.load(__import__("io").BytesIO(z.read("weights.npz"))))
    key = next(k for k in arrays if k.startswith("refine.") and k.endswith(weight))
    if damage == "drop_weight":
        del arrays[key]
    elif damage == "bad_shape":
        arrays[key] = arrays[key][:, :3]
    else:
        meta["refine"]["config"][setting] = value
    buf = __import__("io").BytesIO()
    np.savez(buf, **arrays)
    bad = tmp_path / "bad.gka"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("meta.json", json.dumps(meta))
        z.writestr("weights.npz", buf.getvalue())
    with pytest.raises(AdapterError, match="refinement"):
        LabelAdapter.load(bad)


def test_missing_and_corrupt_images_are_reported_not_dropped(dots, tmp_path):
    adapter, _, (src, tgt, images), (t_src, _, t_images), _ = dots
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    t_images = list(t_images)
    t_images[3], t_images[7] = str(tmp_path / "gone.png"), str(corrupt)
    pred, refined, problems = adapter.predict_images(t_src, t_images, ids=[f"f{i}" for i in range(len(t_src))])
    assert [p.path for p in problems] == [t_images[3], t_images[7]]
    assert "missing image (face f3)" in problems[0].reason and "unreadable image (face f7)" in problems[1].reason
    assert not refined[3] and not refined[7] and refined.sum() == len(t_src) - 2
    np.testing.assert_allclose(pred[3], adapter.predict(t_src[3:4])[0], rtol=0, atol=1e-9)
    # Fitting leaves faces without an image out and says which.
    images = list(images[:30])
    images[0] = str(tmp_path / "gone.png")
    a = LabelAdapter("aflw19", "aflw19", normaliser="inter_ocular")
    a.fit(src[:30], tgt[:30], FitConfig(head="linear"))
    rep = a.fit_images(src[:30], tgt[:30], images, RefineConfig(**{**TINY, "steps": 20, "folds": 2}))
    assert [p.path for p in rep.problems] == [images[0]] and rep.n_pairs == 29


def test_fit_images_needs_a_fitted_shape_adapter_and_enough_pairs(tmp_path):
    src, tgt, images = dot_faces(tmp_path, 8, seed=4)
    a = LabelAdapter("aflw19", "aflw19")
    with pytest.raises(AdapterError, match="shape adapter"):
        a.fit_images(src, tgt, images)
    a.fit(src, tgt, FitConfig(head="linear"))
    with pytest.raises(AdapterError, match="at least 10 pairs"):
        a.fit_images(src, tgt, images)


def _records(src, tgt, images, scheme_src="aflw19"):
    mk = [FaceRecord(id=f"f{i}", image=im, width=96, height=96, scheme=scheme_src, points=p, split="train")
          for i, (p, im) in enumerate(zip(src, images, strict=True))]
    lab = [FaceRecord(id=f"f{i}", image=im, width=96, height=96, scheme="aflw19", points=p, split="train")
           for i, (p, im) in enumerate(zip(tgt, images, strict=True))]
    return mk, lab


def test_cli_fit_images_eval_and_apply(dots, tmp_path):
    _, _, train, test, _ = dots
    run = CliRunner()
    s_tr, t_tr = _records(*train)
    s_te, t_te = _records(*test)
    for name, recs in (("s_tr", s_tr), ("t_tr", t_tr), ("s_te", s_te), ("t_te", t_te)):
        write_manifest(recs, tmp_path / f"{name}.jsonl")
    gka = tmp_path / "dots.gka"
    res = run.invoke(app, ["adapt", "fit", "--source", str(tmp_path / "s_tr.jsonl"), "--target",
                           str(tmp_path / "t_tr.jsonl"), "-o", str(gka), "--images", "--refine-steps", "250",
                           *[f"--refine={k}={v}" for k, v in TINY.items() if k != "steps"],
                           "--head", "linear", "--device", "cpu", "--threads", "1"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "image refinement kept" in res.output
    res = run.invoke(app, ["adapt", "eval", str(gka), "--source", str(tmp_path / "s_te.jsonl"), "--target",
                           str(tmp_path / "t_te.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["method"]: r for r in json.loads(res.stdout[res.stdout.index("{"):])["rows"]}
    shape, refined = rows["adapter (linear)"], rows["adapter (linear) + image refinement"]
    assert refined["nme_pct"] < shape["nme_pct"] and refined["refined"] == len(s_te)
    # apply: one image gone -> that face keeps the shape-only answer, is named, and the exit code says so
    s_te[5] = s_te[5].model_copy(update={"image": str(tmp_path / "gone.png")})
    write_manifest(s_te, tmp_path / "s_te2.jsonl")
    out = tmp_path / "adapted.jsonl"
    res = run.invoke(app, ["adapt", "apply", str(gka), str(tmp_path / "s_te2.jsonl"), str(out)])
    assert res.exit_code == 1
    assert "gone.png" in res.output and "shape-only" in res.output
    recs = list(read_manifest(out))
    assert len(recs) == len(s_te)
    assert [r.attributes["refined"] for r in recs].count(False) == 1 and recs[5].attributes["refined"] is False
    # eval reads the target records' images: a missing one is named, scored shape-only, exit 1
    t_te[5] = t_te[5].model_copy(update={"image": str(tmp_path / "gone.png")})
    write_manifest(t_te, tmp_path / "t_te2.jsonl")
    res = run.invoke(app, ["adapt", "eval", str(gka), "--source", str(tmp_path / "s_te.jsonl"), "--target",
                           str(tmp_path / "t_te2.jsonl")])
    assert res.exit_code == 1 and "gone.png" in res.output and "image refinement" in res.output
    # and never over an existing output without --overwrite
    res = run.invoke(app, ["adapt", "apply", str(gka), str(tmp_path / "s_te.jsonl"), str(out)])
    assert res.exit_code != 0 and "overwrite" in res.output


def test_gap_report_stage_uses_the_images(dots, tmp_path):
    from gapkit.gap.report import _prepare_a

    adapter, _, _, test, _ = dots
    src_recs, _ = _records(*test)
    src_recs[2] = src_recs[2].model_copy(update={"image": str(tmp_path / "gone.png")})
    problems: list = []
    stages = _prepare_a(FaceSet(src_recs), "aflw19", adapter, problems)
    want = adapter.predict_records(src_recs)[0]
    np.testing.assert_array_equal(stages["after adapter"], want)
    assert not np.allclose(want, adapter.predict(test[0]))
    assert [p.path for p in problems] == [str(tmp_path / "gone.png")]


def test_the_cascade_leaves_a_point_labelled_on_no_face_where_it_was():
    from gapkit.refine import cascade

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (12, 48, 48), dtype=np.uint8)
    init = rng.uniform(10, 38, (12, SCHEME.num_points, 2))
    target = init + 1.0
    target[:, [3, SCHEME.flip[3]]] = np.nan  # mirrored faces would teach point 3 its partner's label
    state = cascade.train_cascade(crops, init, target, np.array(SCHEME.flip), cells=(4.0, 2.0), stages=2,
                                  samples=100, jitter=1.0, strengths=(1.0, 10.0))
    cascade.check_state(state, SCHEME.num_points, (4.0, 2.0), 2)  # finite, the right shapes
    out = cascade.run_cascade(state, crops, init, (4.0, 2.0))
    np.testing.assert_array_equal(out[:, [3, SCHEME.flip[3]]], init[:, [3, SCHEME.flip[3]]])
    assert not np.allclose(out[:, 0], init[:, 0])
