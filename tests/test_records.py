from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gapkit.errors import FormatError, Problem
from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.records import FaceRecord, json_schema, make_record

REPO = Path(__file__).resolve().parents[1]


def face(**kw):
    from fixtures.make_fixtures import face68, place  # the same procedural face as the fixtures

    base = dict(id="a", image="/x/a.png", width=128, height=128, scheme="ibug68", points=place(face68(), 64, 64, 80))
    base.update(kw)
    return base


@pytest.fixture(autouse=True)
def _import_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


BAD = [
    ("wrong point count", dict(points=np.zeros((67, 2))), "ibug68 has 68 points, got 67"),
    ("infinity", dict(points=np.full((68, 2), np.inf)), "infinity"),
    ("not numbers", dict(points=[["a", "b"]] * 68), "must be numbers"),
    ("zero width", dict(width=0), "width"),
    ("unknown scheme", dict(scheme="ibug69"), "unknown scheme"),
    ("visible length", dict(visible=[True] * 3), "visible has 3 entries"),
    ("bad bbox", dict(bbox=(0, 0, -1, 5)), "bbox"),
    ("extra field", dict(colour="red"), "colour"),
]


@pytest.mark.parametrize("label,change,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_records_name_the_reason(label, change, reason):
    with pytest.raises(FormatError, match=reason) as info:
        make_record("some/file.pts", 7, **face(**change))
    assert info.value.path == "some/file.pts" and info.value.line == 7


def test_nan_is_allowed_and_outside_points_are_flagged_not_clipped():
    f = face()
    f["points"][3] = np.nan
    f["points"][0] = (-5.0, 10.0)
    rec = make_record("f", None, **f)
    assert np.isnan(rec.points[3]).all()
    assert rec.points[0, 0] == -5.0 and rec.outside()[0] and rec.outside().sum() == 1


def test_swapped_axes_and_mirrored_shapes_are_caught():
    f = face()
    with pytest.raises(FormatError, match="axes look swapped"):
        make_record("dg.json", None, **dict(f, points=f["points"][:, ::-1]))
    mirrored = f["points"].copy()
    mirrored[:, 0] = 128 - mirrored[:, 0]  # flipped image, indices not permuted
    with pytest.raises(FormatError, match="mirrored"):
        make_record("x", None, **dict(f, points=mirrored))


def test_manifest_round_trip_keeps_nan_and_relative_paths(tmp_path):
    f = face(image=str(tmp_path / "imgs" / "a.png"), visible=[True] * 67 + [False], bbox=(1.0, 2.0, 3.0, 4.0),
             attributes={"k": [1, 2]}, split="train", source="s")
    f["points"][5] = np.nan
    rec = FaceRecord(**f)
    path = tmp_path / "m.jsonl"
    write_manifest([rec], path)
    line = json.loads(path.read_text())
    assert line["image"] == "imgs/a.png" and line["points"][5] == [None, None]
    back = list(read_manifest(path))
    assert back[0].model_dump(mode="json") == rec.model_dump(mode="json")


def test_manifest_problems_carry_the_line_number(tmp_path):
    good = FaceRecord(**face()).to_json()
    path = tmp_path / "m.jsonl"
    path.write_text(good + "\n{not json\n" + good.replace('"width":128', '"width":-1') + "\n")
    out = list(read_manifest(path))
    assert isinstance(out[0], FaceRecord)
    assert isinstance(out[1], Problem) and out[1].line == 2 and "JSON" in out[1].reason
    assert isinstance(out[2], Problem) and out[2].line == 3 and "width" in out[2].reason


def test_exported_json_schema_is_current():
    on_disk = json.loads((REPO / "schemas" / "face_record.schema.json").read_text())
    assert on_disk == json_schema(), "run: python -m gapkit.records > schemas/face_record.schema.json"


def test_points_serialise_without_nan_literals():
    f = face()
    f["points"][0] = np.nan
    text = FaceRecord(**f).to_json()
    assert "NaN" not in text and json.loads(text)["points"][0] == [None, None]
