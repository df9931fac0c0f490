"""COCO and dlib readers on the inputs of issue 32: no crash loses a run, every record problem
names its annotation, faces that are not there are counted (not errors), dlib point counts
are the set's, labels read without images, COCO visibility flags survive round trips."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gapkit.convert import convert
from gapkit.errors import InputError, Problem
from gapkit.faceset import DataSource, load
from gapkit.formats import get_format
from gapkit.schemes import get_scheme

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def face(scheme: str, x0: float = 20.0, y0: float = 10.0) -> np.ndarray:
    """Points of ``scheme`` laid out as an upright face (eyes above the mouth, the subject's right
    eye on the image's left), so the mirror check passes; other points spread between them."""
    s = get_scheme(scheme)
    pts = np.array([[x0 + 25 + (i % 7), y0 + 35 + (i % 5)] for i in range(s.num_points)], float)
    place = {"right_eye": (10, 20), "left_eye": (40, 20), "mouth": (25, 50)}
    for key, group in s.orientation.items():
        for j, i in enumerate(s.groups[group]):
            pts[i] = (x0 + place[key][0] + j, y0 + place[key][1] + (j % 2))
    return pts


def png(path: Path, w: int, h: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (90, 90, 90)).save(path)
    return path


def split(out) -> tuple[list, list]:
    out = list(out)
    return [r for r in out if not isinstance(r, Problem)], [p for p in out if isinstance(p, Problem)]


# ---------------------------------------------------------------- COCO


def coco_ann(ann_id: int, image_id, pts: np.ndarray, v: int | list = 2, **extra) -> dict:
    vs = [v] * len(pts) if isinstance(v, int) else v
    kps = [t for (x, y), vv in zip(pts.tolist(), vs, strict=True) for t in (x, y, vv)]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "keypoints": kps,
            "num_keypoints": sum(1 for vv in vs if vv), **extra}


def coco_doc(bad: dict | None = None, images: list | None = None) -> dict:
    """One good annotation (id 1) on image 7, and ``bad`` (id 2) after it."""
    imgs = images if images is not None else [{"id": 7, "file_name": "a.png", "width": 120, "height": 100}]
    anns = [coco_ann(1, 7, face("ibug68"))] + ([bad] if bad else [])
    return {"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}


def _wholebody(face_valid: bool | None, zero: bool) -> dict:
    ann = coco_ann(2, 7, face("ibug68")[:17])  # 17 body points
    kps = [0.0] * 204 if zero else coco_ann(0, 7, face("ibug68"))["keypoints"]
    ann.update(face_kpts=kps, face_box=[0, 0, 0, 0] if zero else [20, 20, 60, 70])
    if face_valid is not None:
        ann["face_valid"] = face_valid
    return ann


def _extra(**fields) -> dict:
    return coco_ann(2, 7, face("ibug68"), **fields)


# name: (bad annotation, images[] or None, expected kind, text the reason holds)
COCO_CASES = {
    "image without file_name": (coco_ann(2, 8, face("ibug68")),
                                [{"id": 7, "file_name": "a.png"}, {"id": 8, "width": 120}], "bad",
                                "images entry 8 has no file_name"),
    "gapkit field is a string": (_extra(gapkit="oops"), None, "bad", "gapkit field must be an object"),
    "gapkit attributes are a list": (_extra(gapkit={"attributes": [1, 2]}), None, "bad",
                                     "gapkit.attributes must be an object"),
    "image_id is a list": (coco_ann(2, [7], face("ibug68")), None, "bad", "image_id [7] is not in images"),
    "bbox is a number": (_extra(bbox=5), None, "bad", "box must be [x, y, w, h]"),
    "width is not whole": (coco_ann(2, 9, face("ibug68")),
                           [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "a.png", "width": 120.5}],
                           "bad", "width 120.5 is not a whole number"),
    "wrong point count": (coco_ann(2, 7, face("ibug68")[:67]), None, "bad", "67 points match no known"),
    "mirrored shape": (coco_ann(2, 7, face("ibug68") * [-1, 1] + [120, 0]), None, "bad", "mirrored"),
    "image file missing": (coco_ann(2, 9, face("ibug68")),
                           [{"id": 7, "file_name": "a.png"}, {"id": 9, "file_name": "gone.png"}], "bad",
                           "gone.png"),
    "wholebody face_valid false": (_wholebody(False, zero=True), None, "not_a_face", "face_valid false"),
    "wholebody face all zero": (_wholebody(None, zero=True), None, "not_a_face", "all zero"),
    "num_keypoints 0": (coco_ann(2, 7, face("ibug68") * 0, v=0), None, "not_a_face", "num_keypoints 0"),
}


@pytest.mark.parametrize("case", list(COCO_CASES))
def test_coco_bad_annotation_is_named_and_good_ones_read(tmp_path, case):
    bad, images, kind, text = COCO_CASES[case]
    png(tmp_path / "a.png", 120, 100)
    path = tmp_path / "faces.json"
    path.write_text(json.dumps(coco_doc(bad, images)))
    p = _the_good_face_and_one_problem(get_format("coco").read(path), "a#1", kind, path, text)
    if kind == "bad":
        assert p.reason.startswith("annotation 1 (id 2): ")


def _the_good_face_and_one_problem(items, good_id: str, kind: str, path, text: str):
    """The good face read exactly, and one problem of ``kind`` at entry 1 of ``path`` saying ``text``."""
    recs, probs = split(items)
    assert [r.id for r in recs] == [good_id]
    np.testing.assert_array_equal(recs[0].points, face("ibug68"))
    assert len(probs) == 1, probs
    p = probs[0]
    assert (p.kind, p.path, p.line) == (kind, str(path), 1)
    assert text in p.reason, p.reason
    return p


def test_coco_wholebody_persons_without_faces_are_counted_not_errors(tmp_path):
    png(tmp_path / "a.png", 120, 100)
    doc = coco_doc(_wholebody(False, zero=True))
    doc["annotations"][0] = _wholebody(True, zero=False) | {"id": 1}
    doc["annotations"].append(_wholebody(None, zero=True) | {"id": 3})
    (tmp_path / "wb.json").write_text(json.dumps(doc))
    faces, rep = load(DataSource(path=tmp_path / "wb.json", format="coco"))
    assert faces.ids == ["a#1"] and faces.scheme == "ibug68"
    np.testing.assert_array_equal(faces[0].points, face("ibug68"))
    assert rep.skipped == 0 and sum(rep.not_faces.values()) == 2


@pytest.mark.parametrize("fmt,name", [("coco", "faces.json"), ("dlib", "faces.xml")])
def test_a_folder_is_an_input_error(tmp_path, fmt, name):
    shutil.copytree(FIXTURES / fmt, tmp_path / "data")
    with pytest.raises(InputError, match="is a folder, but .* reads one file"):
        load(DataSource(path=tmp_path / "data", format=fmt))


# name: (the source's v per point, as given to the first file)
VISIBILITY = {
    "mmpose: every labelled point 1": [1] * 68,
    "lapa: every point 2": [2] * 68,
    "cofw: 1 and 2 mixed, some missing": [0, 0] + [1, 2] * 33,
    "all 1 but one missing": [0] + [1] * 67,
}


@pytest.mark.parametrize("case", list(VISIBILITY))
def test_coco_visibility_survives_round_trips(tmp_path, case):
    v = VISIBILITY[case]
    png(tmp_path / "a.png", 120, 100)
    doc = coco_doc()
    doc["annotations"] = [coco_ann(1, 7, face("ibug68"), v=v)]
    src = tmp_path / "src.json"
    src.write_text(json.dumps(doc))
    flags = []
    for n in range(3):
        out = tmp_path / f"out{n}.json"
        rep = convert(src, out, "coco", "coco")
        assert rep.written == 1 and not rep.problems, rep.problems
        flags.append(json.loads(out.read_text())["annotations"][0]["keypoints"][2::3])
        src = out
    assert flags == [v, v, v]


def test_coco_labels_only_opens_no_image(tmp_path):
    doc = coco_doc(coco_ann(2, 8, face("ibug68")),
                   [{"id": 7, "file_name": "a.png", "width": 120, "height": 100.0},
                    {"id": 8, "file_name": "sub/b.png"}])
    path = tmp_path / "faces.json"
    path.write_text(json.dumps(doc))
    recs, probs = split(get_format("coco").read(path, labels_only=True))
    assert not probs
    assert [(r.id, r.image, r.width, r.height) for r in recs] == [
        ("a#1", str(tmp_path / "a.png"), 120, 100), ("sub/b#2", str(tmp_path / "sub/b.png"), None, None)]
    np.testing.assert_array_equal(recs[1].points, face("ibug68"))
    faces, rep = load(DataSource(path=path, format="coco", labels_only=True))
    assert len(faces) == 2 and not rep.problems


# ---------------------------------------------------------------- dlib


def dlib_box(pts: np.ndarray, attrs: str = "", skip: tuple[int, ...] = ()) -> str:
    parts = "".join(f"<part name='{i:02d}' x='{x:g}' y='{y:g}'/>" for i, (x, y) in enumerate(pts) if i not in skip)
    return f"<box top='5' left='10' width='60' height='70'{attrs}>{parts}</box>"


def dlib_xml(path: Path, images: list[tuple[str, str]]) -> Path:
    """images: (the <image> tag's attributes, its boxes' XML)."""
    body = "".join(f"<image {attrs}>{boxes}</image>" for attrs, boxes in images)
    path.write_text(f"<?xml version='1.0'?><dataset><images>{body}</images></dataset>")
    return path


GOOD = ("file='a.png' width='120' height='100'", dlib_box(face("ibug68")))

# name: (the second <image>, expected kind, text in the reason); the bad box is the file's box 1
DLIB_CASES = {
    "width not whole": (("file='a.png' width='120.5' height='100'", dlib_box(face("ibug68"))), "bad",
                        "<image width='120.5'> is not a whole number"),
    "width not a number": (("file='a.png' width='abc'", dlib_box(face("ibug68"))), "bad",
                           "<image width='abc'> is not a whole number"),
    "width disagrees with the file": (("file='a.png' width='130'", dlib_box(face("ibug68"))), "bad",
                                      "size 130x? does not match image"),
    "image without file": (("width='120'", dlib_box(face("ibug68"))), "bad", "<image> has no file attribute"),
    "part name not a number": (("file='a.png'", dlib_box(face("ibug68")).replace("name='03'", "name='x3'")),
                               "bad", "part name, x or y is not a number"),
    "part named twice": (("file='a.png'", dlib_box(face("ibug68")).replace("name='03'", "name='04'")),
                         "bad", "a part name appears twice"),
    "mirrored shape": (("file='a.png'", dlib_box(face("ibug68") * [-1, 1] + [120, 0])), "bad", "mirrored"),
    "no parts": (("file='a.png'", "<box top='1' left='1' width='9' height='9'/>"), "bad", "no <part>"),
    "image file missing": (("file='gone.png'", dlib_box(face("ibug68"))), "bad", "gone.png"),
    "ignore box": (("file='a.png'", "<box top='1' left='1' width='9' height='9' ignore='1'/>"), "not_a_face",
                   "ignore"),
    "ignore box with parts": (("file='a.png'", dlib_box(face("ibug68")[:5], " ignore='1'")), "not_a_face",
                              "ignore"),
}


@pytest.mark.parametrize("case", list(DLIB_CASES))
def test_dlib_bad_box_is_named_and_good_ones_read(tmp_path, case):
    image, kind, text = DLIB_CASES[case]
    png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [GOOD, image])
    p = _the_good_face_and_one_problem(get_format("dlib").read(path), "a#0", kind, path, text)
    if kind == "bad":
        assert "box 0: " in p.reason and ("image '" in p.reason or "without a file" in p.reason)


# name: (<image> attributes, labels_only, expected (width, height))
DLIB_SIZES = {
    "float width": ("file='a.png' width='120.0' height='100.0'", False, (120, 100)),
    "float width, labels only": ("file='a.png' width='120.0' height='100'", True, (120, 100)),
    "width without height": ("file='a.png' width='120'", False, (120, 100)),
    "width without height, labels only": ("file='a.png' width='120'", True, (None, None)),
    "no size, labels only": ("file='a.png'", True, (None, None)),
}


@pytest.mark.parametrize("case", list(DLIB_SIZES))
def test_dlib_image_size(tmp_path, case):
    attrs, labels_only, size = DLIB_SIZES[case]
    if not labels_only:
        png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [(attrs, dlib_box(face("ibug68"), skip=(3,)))])
    recs, probs = split(get_format("dlib").read(path, labels_only=labels_only))
    assert not probs
    assert (recs[0].width, recs[0].height, recs[0].image) == (*size, str(tmp_path / "a.png"))
    want = face("ibug68")
    want[3] = np.nan
    np.testing.assert_array_equal(recs[0].points, want)


# name: (point count of every box, reader options, expected scheme or the refusal's text)
DLIB_COUNTS = {
    "29 parts are cofw29, not ibug68": (29, {}, "cofw29"),
    "5 parts are dlib5": (5, {}, "dlib5"),
    "12-point eye set is refused": (12, {}, "named 00..11 (12 points), which matches no face scheme"),
    "40 parts are refused": (40, {}, "named 00..39 (40 points)"),
    "67 parts are refused": (67, {}, "named 00..66 (67 points)"),
    "67 parts read as ibug68 when asked": (67, {"scheme": "ibug68"}, "ibug68"),
    "67 parts read as 68 points when asked": (67, {"num_points": 68}, "ibug68"),
    "num_points matching no scheme": (12, {"num_points": 12}, "12 points match no known face scheme"),
}


@pytest.mark.parametrize("case", list(DLIB_COUNTS))
def test_dlib_point_count_is_the_sets(tmp_path, case):
    k, opts, want = DLIB_COUNTS[case]
    scheme = want if want in ("cofw29", "dlib5", "ibug68") else None
    pts = face(scheme)[:k] if scheme else np.arange(2 * k, dtype=float).reshape(k, 2) + 5
    png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [("file='a.png'", dlib_box(pts) + dlib_box(pts, skip=(0,)))])
    if scheme is None:
        with pytest.raises(InputError, match=want.replace("(", r"\(").replace(")", r"\)")):
            list(get_format("dlib").read(path, **opts))
        return
    recs, probs = split(get_format("dlib").read(path, **opts))
    assert not probs and [r.scheme for r in recs] == [scheme, scheme]
    full = np.full((get_scheme(scheme).num_points, 2), np.nan)
    full[:k] = pts
    np.testing.assert_array_equal(recs[0].points, full)
    full[0] = np.nan
    np.testing.assert_array_equal(recs[1].points, full)


def test_dlib_ignore_boxes_are_counted_not_errors(tmp_path):
    png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [GOOD, ("file='a.png'", dlib_box(face("ibug68")[:5], " ignore='1'"))])
    faces, rep = load(DataSource(path=path, format="dlib"))
    assert faces.ids == ["a#0"] and rep.skipped == 0 and sum(rep.not_faces.values()) == 1


# ---------------------------------------------------------------- real files


@pytest.mark.realdata
@pytest.mark.parametrize("labels_only", [False, True])
def test_real_dlib_and_mmpose_files(shared, labels_only):
    dlib = shared / "dlib_example_faces"
    recs, probs = split(get_format("dlib").read(dlib / "training_with_face_landmarks.xml", labels_only=labels_only))
    assert len(recs) == 18 and not probs and {r.scheme for r in recs} == {"ibug68"}
    assert (recs[0].width, recs[0].height) == (500, 375)  # 2007_007763.jpg, as the XML says
    mm = shared / "mmpose_face_samples"
    for rel, n, scheme in [("300w/test_300w.json", 2, "ibug68"), ("cofw/test_cofw.json", 2, "cofw29"),
                           ("aflw/test_aflw.json", 2, "aflw19"), ("wflw/test_wflw.json", 4, "wflw98"),
                           ("lapa/test_lapa.json", 2, "lapa106"), ("300vw/anno_300vw.json", 3, "ibug68")]:
        doc = json.loads((mm / rel).read_text())
        recs, probs = split(get_format("coco").read(mm / rel, labels_only=labels_only))
        assert len(recs) == n and not probs and {r.scheme for r in recs} == {scheme}, rel
        kp = np.array(doc["annotations"][0]["keypoints"], float).reshape(-1, 3)
        np.testing.assert_array_equal(recs[0].points, kp[:, :2])
        im = next(i for i in doc["images"] if i["id"] == doc["annotations"][0]["image_id"])
        assert (recs[0].width, recs[0].height) == (im["width"], im["height"])


def test_coco_round_trip_keeps_wholebody_copy_untouched(tmp_path):
    """The reader does not change the document it was given (it copies the attributes)."""
    png(tmp_path / "a.png", 120, 100)
    doc = coco_doc(_extra(gapkit={"attributes": {"k": 1}}))
    before = copy.deepcopy(doc)
    (tmp_path / "f.json").write_text(json.dumps(doc))
    recs, _ = split(get_format("coco").read(tmp_path / "f.json"))
    assert recs[1].attributes == {"k": 1} and doc == before


def test_one_mistyped_part_name_is_its_boxs_problem_not_the_files_scheme(tmp_path):
    # 68-point boxes and one whose last part is named 69: the file stays ibug68, that box is named.
    pts = face("ibug68")
    bad = dlib_box(pts).replace("name='67'", "name='69'")
    png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [("file='a.png'", dlib_box(pts) + dlib_box(pts) + bad)])
    recs, probs = split(get_format("dlib").read(path))
    assert [r.scheme for r in recs] == ["ibug68", "ibug68"]
    assert len(probs) == 1 and "box 2" in probs[0].reason and "part 69 out of range for 68 points" in probs[0].reason


def test_a_tie_between_a_scheme_count_and_a_typo_keeps_the_scheme(tmp_path):
    # two boxes, one with a part mistyped 670: a 1-1 tie, and 68 is a scheme's count, 671 is not
    pts = face("ibug68")
    png(tmp_path / "a.png", 120, 100)
    path = dlib_xml(tmp_path / "faces.xml", [("file='a.png'", dlib_box(pts) + dlib_box(pts).replace("name='67'",
                                                                                                  "name='670'"))])
    recs, probs = split(get_format("dlib").read(path))
    assert [r.scheme for r in recs] == ["ibug68"]
    assert len(probs) == 1 and "part 670 out of range for 68 points" in probs[0].reason
