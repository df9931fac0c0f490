"""The MATLAB readers: AFLW2000-3D (aflw2000) and COFW / COFW-68 (cofw).

Small .mat files are written here with scipy.io.savemat under each dataset's layout, in
1-based coordinates as Matlab stores them; records must come back 0-based, exactly.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.io
from PIL import Image
from typer.testing import CliRunner

from gapkit.errors import ConfigError, InputError, Problem
from gapkit.formats import get_format, guess_format
from gapkit.records import FaceRecord

runner = CliRunner()


def face68(cx: float = 100.0, cy: float = 90.0, scale: float = 80.0) -> np.ndarray:
    from fixtures.make_fixtures import face68 as unit
    from fixtures.make_fixtures import place

    return place(unit(), cx, cy, scale)


# ibug68 indices standing in for each point of AFLW's 21 and COFW's 29 (in scheme order).
AFLW21_FROM68 = [17, 19, 21, 22, 24, 26, 36, 37, 39, 42, 44, 45, 1, 31, 30, 35, 15, 48, 62, 54, 8]
COFW29_FROM68 = [17, 26, 21, 22, 19, 20, 24, 23, 36, 45, 39, 42, 38, 40, 43, 47, 37, 44, 31, 35, 30, 33,
                 48, 54, 51, 62, 66, 57, 8]


def split(items) -> tuple[list[FaceRecord], list[Problem]]:
    items = list(items)
    return [r for r in items if isinstance(r, FaceRecord)], [p for p in items if isinstance(p, Problem)]


def write_image(path, w: int, h: int) -> None:
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def write_v73(path) -> None:
    """The first bytes of a MATLAB v7.3 file: a 128-byte MATLAB header, then HDF5 at 512."""
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    path.write_bytes(head.ljust(116, b" ") + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 384 + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)


# ---- AFLW2000-3D -----------------------------------------------------------------------------

def aflw_arrays() -> dict:
    p68 = face68()
    z = np.linspace(-80, 80, 68)
    pt2d = (face68()[AFLW21_FROM68] + 1.0).T.copy()
    pt2d[:, [12, 16]] = [[-1.0, -1.0], [452.0, 452.0]]  # the ears not labelled, as AFLW2000-3D writes it
    return {"pt3d_68": np.vstack([(p68 + 1.0).T, z]).astype(np.float32),
            "pt2d": pt2d, "Pose_Para": np.array([[-0.1, 0.2, 0.05, 100, 90, -50, 0.0015]], np.float32),
            "roi": np.array([[1, 2, 300, 300]], np.int16)}


def aflw_pair(folder, name: str = "image00001", image: bool = True, **arrays) -> object:
    folder.mkdir(parents=True, exist_ok=True)
    data = aflw_arrays()
    data.update(arrays)
    scipy.io.savemat(folder / f"{name}.mat", {k: v for k, v in data.items() if v is not None})
    if image:
        write_image(folder / f"{name}.jpg", 200, 180)
    return folder / f"{name}.mat"


def test_aflw2000_pt3d_68_is_one_based_with_depth_and_pose(tmp_path):
    mat = aflw_pair(tmp_path)
    (rec,), probs = split(get_format("aflw2000").read(tmp_path))
    assert not probs
    pt3d = scipy.io.loadmat(mat)["pt3d_68"].astype(float)
    assert rec.scheme == "ibug68" and rec.id == "image00001" and rec.split == "test"
    assert rec.points.tolist() == (pt3d[:2].T - 1.0).tolist()
    assert rec.attributes["z"] == pt3d[2].tolist()  # same pixel scale, not shifted
    assert (rec.width, rec.height) == (200, 180) and rec.image == str(tmp_path / "image00001.jpg")
    pose = rec.attributes["pose_para"]
    assert list(pose) == ["pitch", "yaw", "roll", "tx", "ty", "tz", "scale"]
    assert pose["yaw"] == pytest.approx(0.2) and pose["scale"] == pytest.approx(0.0015)


def test_aflw2000_pt2d_reads_aflw21_with_unlabelled_points_missing(tmp_path):
    mat = aflw_pair(tmp_path)
    (rec,), probs = split(get_format("aflw2000").read(tmp_path / "image00001.mat", points="pt2d"))
    assert not probs and rec.scheme == "aflw21" and "z" not in rec.attributes
    want = scipy.io.loadmat(mat)["pt2d"].T - 1.0
    want[[12, 16]] = np.nan
    np.testing.assert_array_equal(rec.points, want)


def test_aflw2000_labels_only_needs_no_image(tmp_path):
    aflw_pair(tmp_path, image=False)
    _, (prob,) = split(get_format("aflw2000").read(tmp_path))
    assert prob.path.endswith("image00001.mat") and "no image" in prob.reason
    (rec,), probs = split(get_format("aflw2000").read(tmp_path, labels_only=True))
    assert not probs and rec.width is None and rec.height is None
    assert rec.image == str(tmp_path / "image00001.jpg")


def _bad_aflw(tmp_path, case: str) -> object:
    path = tmp_path / "image00002.mat"
    a = aflw_arrays()
    if case == "not_a_mat":
        path.write_text("version: 1\nn_points: 68\n{\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        aflw_pair(tmp_path, "image00002", image=False)
        path.write_bytes(path.read_bytes()[:300])
    elif case == "v73":
        write_v73(path)
    else:
        arrays = {
            "missing_key": {"pt3d_68": None},
            "wrong_rows": {"pt3d_68": a["pt3d_68"][:2]},
            "transposed": {"pt3d_68": a["pt3d_68"].T.copy()},
            "nan": {"pt3d_68": np.where(np.arange(68) == 4, np.nan, a["pt3d_68"])},
            "text": {"pt3d_68": "pt3d"},
            "mirrored": {"pt3d_68": np.vstack([201.0 - a["pt3d_68"][0], a["pt3d_68"][1:]])},
            "bad_pose": {"Pose_Para": np.zeros((1, 3))},
        }[case]
        aflw_pair(tmp_path, "image00002", **arrays)
    return path


AFLW_BAD = [("not_a_mat", "not a MATLAB .mat file"), ("empty", "not a MATLAB .mat file"),
            ("truncated", "damaged .mat file"), ("v73", "v7.3 (HDF5)"),
            ("missing_key", "no pt3d_68 in this .mat (it holds "), ("wrong_rows", "pt3d_68 must be 3 x 68, got 2 x 68"),
            ("transposed", "pt3d_68 must be 3 x 68, got 68 x 3"), ("nan", "pt3d_68: point 5 is not finite"),
            ("text", "pt3d_68 must be numbers, got text"), ("mirrored", "shape is mirrored"),
            ("bad_pose", "Pose_Para must be 1 x 7, got 1 x 3")]


@pytest.mark.parametrize("case,reason", AFLW_BAD, ids=[c for c, _ in AFLW_BAD])
def test_aflw2000_bad_file_is_a_named_problem_and_the_good_one_is_kept(tmp_path, case, reason):
    aflw_pair(tmp_path, "image00001")
    bad = _bad_aflw(tmp_path, case)
    recs, probs = split(get_format("aflw2000").read(tmp_path))
    assert [r.id for r in recs] == ["image00001"]
    assert len(probs) == 1 and probs[0].path == str(bad) and probs[0].kind == "bad", probs
    assert reason in probs[0].reason, probs[0].reason


@pytest.mark.parametrize("pt2d,reason", [
    (np.full((2, 21), -1.0), "every point is missing"),
    (np.where(np.arange(21) == 3, np.inf, 50.0) * np.ones((2, 1)), "pt2d: point 4 is not finite"),
    (np.ones((2, 19)), "pt2d must be 2 x 21, got 2 x 19"),
])
def test_aflw2000_bad_pt2d(tmp_path, pt2d, reason):
    aflw_pair(tmp_path, pt2d=pt2d)
    _, (prob,) = split(get_format("aflw2000").read(tmp_path, points="pt2d"))
    assert reason in prob.reason, prob.reason


def test_aflw2000_unknown_points_option_stops_the_job(tmp_path):
    aflw_pair(tmp_path)
    with pytest.raises(ConfigError, match="pt3d_68, pt2d"):
        list(get_format("aflw2000").read(tmp_path, points="pt3d"))


# ---- COFW --------------------------------------------------------------------------------------

def cofw_phis(n: int = 2) -> np.ndarray:
    """N x 87 rows: 29 x, 29 y (1-based), 29 flags; face i shifted by 7 i pixels, point i occluded."""
    rows = []
    for i in range(n):
        xy = face68(60 + 7 * i, 55, 50)[COFW29_FROM68] + 1.0
        flags = (np.arange(29) == i).astype(float)
        rows.append(np.concatenate([xy[:, 0], xy[:, 1], flags]))
    return np.array(rows)


def cofw_images(n: int = 2) -> np.ndarray:
    cells = np.empty((n, 1), dtype=object)
    rng = np.random.default_rng(0)
    for i in range(n):  # colour and grey, as COFW mixes them
        shape = (110 + i, 130, 3) if i % 2 == 0 else (105, 120 + i)
        cells[i, 0] = rng.integers(0, 256, shape, dtype=np.uint8)
    return cells


def cofw_mat(path, n: int = 2, train: bool = False, **override) -> object:
    keys = ("IsTr", "phisTr", "bboxesTr") if train else ("IsT", "phisT", "bboxesT")
    boxes = np.array([[20.0 + i, 15.0, 80.0, 90.0] for i in range(n)])
    data = dict(zip(keys, (cofw_images(n), cofw_phis(n), boxes), strict=True))
    data.update(override)
    scipy.io.savemat(path, {k: v for k, v in data.items() if v is not None})
    return path


def test_cofw_labels_only_is_one_based_with_occlusion_and_boxes(tmp_path):
    mat = cofw_mat(tmp_path / "COFW_test_color.mat")
    recs, probs = split(get_format("cofw").read(mat, labels_only=True))
    assert not probs and [r.id for r in recs] == ["cofw_test/0001", "cofw_test/0002"]
    phis = cofw_phis()
    for i, r in enumerate(recs):
        assert r.scheme == "cofw29" and r.split == "test" and r.source == "cofw"
        assert r.points[:, 0].tolist() == (phis[i, :29] - 1).tolist()
        assert r.points[:, 1].tolist() == (phis[i, 29:58] - 1).tolist()
        assert r.visible == [k != i for k in range(29)]  # flag 1 = occluded
        assert r.bbox == (19.0 + i, 14.0, 80.0, 90.0)
        assert r.width is None and r.image == f"{mat}#{i + 1}"


def test_cofw_labels_only_with_an_images_folder_names_it_and_writes_nothing(tmp_path):
    mat = cofw_mat(tmp_path / "COFW_test.mat")
    recs, probs = split(get_format("cofw").read(mat, images=tmp_path / "png", labels_only=True))
    assert not probs and [r.image for r in recs] == [str(tmp_path / "png" / "cofw_test" / f"000{i}.png")
                                                     for i in (1, 2)]
    assert not (tmp_path / "png").exists()


def test_cofw_train_keys_give_the_train_split(tmp_path):
    recs, probs = split(get_format("cofw").read(cofw_mat(tmp_path / "COFW_train.mat", 3, train=True),
                                                labels_only=True))
    assert not probs and [r.id for r in recs] == ["cofw_train/0001", "cofw_train/0002", "cofw_train/0003"]
    assert {r.split for r in recs} == {"train"}


def test_cofw_images_are_written_once_as_png(tmp_path):
    mat = cofw_mat(tmp_path / "COFW_test_color.mat")
    out = tmp_path / "png"
    recs, probs = split(get_format("cofw").read(mat, images=out))
    assert not probs
    cells = cofw_images()
    for i, r in enumerate(recs):
        png = out / "cofw_test" / f"{i + 1:04d}.png"
        assert r.image == str(png)
        np.testing.assert_array_equal(np.asarray(Image.open(png)), cells[i, 0])
        assert (r.width, r.height) == (cells[i, 0].shape[1], cells[i, 0].shape[0])
    first = out / "cofw_test" / "0001.png"
    stamp = first.stat().st_mtime_ns
    os.utime(first, ns=(stamp - 10**9, stamp - 10**9))
    again, probs = split(get_format("cofw").read(mat, images=out))
    assert not probs and len(again) == 2
    assert first.stat().st_mtime_ns == stamp - 10**9  # kept, not rewritten


def test_cofw_a_different_png_in_the_way_is_a_problem_not_overwritten(tmp_path):
    mat = cofw_mat(tmp_path / "COFW_test_color.mat")
    out = tmp_path / "png"
    (out / "cofw_test").mkdir(parents=True)
    write_image(out / "cofw_test" / "0002.png", 10, 10)
    recs, (prob,) = split(get_format("cofw").read(mat, images=out))
    assert [r.id for r in recs] == ["cofw_test/0001"]
    assert prob.path == str(mat) and prob.line == 1
    assert "face 1 (id cofw_test/0002)" in prob.reason and "0002.png" in prob.reason and "10x10" in prob.reason
    assert Image.open(out / "cofw_test" / "0002.png").size == (10, 10)


def test_cofw_without_images_or_labels_only_stops_with_the_choice(tmp_path):
    mat = cofw_mat(tmp_path / "COFW_test_color.mat")
    with pytest.raises(ConfigError, match="-O images=DIR.*--no-images"):
        list(get_format("cofw").read(mat))


def _phis_with(row: int, col: int, value: float) -> np.ndarray:
    p = cofw_phis()
    p[row, col] = value
    return p


COFW_FACE_BAD = [  # one bad face of two: (override, face index, reason)
    ({"phisT": _phis_with(1, 2, np.nan)}, "phisT: point 3 is not finite"),
    ({"phisT": _phis_with(1, 60, 2.0)}, "phisT: occlusion flag 3 must be 0 or 1, got 2.0"),
    ({"bboxesT": np.array([[20.0, 15, 80, 90], [20, 15, 0, 90]])}, "bbox must be finite"),
    ({"phisT": np.vstack([cofw_phis()[0], np.concatenate([200 - cofw_phis()[1, :29], cofw_phis()[1, 29:]])])},
     "shape is mirrored"),
]


@pytest.mark.parametrize("override,reason", COFW_FACE_BAD, ids=["nan", "flag", "box", "mirrored"])
def test_cofw_bad_face_names_its_index_and_keeps_the_other(tmp_path, override, reason):
    mat = cofw_mat(tmp_path / "COFW_test.mat", **override)
    recs, (prob,) = split(get_format("cofw").read(mat, labels_only=True))
    assert [r.id for r in recs] == ["cofw_test/0001"]
    assert prob.path == str(mat) and prob.line == 1 and prob.kind == "bad"
    assert prob.reason.startswith("face 1 (id cofw_test/0002): ") and reason in prob.reason, prob.reason


def test_cofw_image_that_is_not_pixels_is_that_faces_problem(tmp_path):
    cells = cofw_images()
    cells[0, 0] = np.zeros((20, 20))  # double, not uint8
    mat = cofw_mat(tmp_path / "COFW_test.mat", IsT=cells)
    recs, (prob,) = split(get_format("cofw").read(mat, images=tmp_path / "png"))
    assert [r.id for r in recs] == ["cofw_test/0002"]
    assert prob.line == 0 and "not 8-bit grey or RGB" in prob.reason


def _v73(path):
    write_v73(path)
    return path


def _text(path):
    path.write_text("image_name,part_0_x,part_0_y\n" * 20)
    return path


COFW_FILE_BAD = [
    ("wrong_width", lambda p: cofw_mat(p, phisT=cofw_phis()[:, :86]), "phisT must be N x 87, got 2 x 86"),
    ("few_images", lambda p: cofw_mat(p, IsT=cofw_images(1)), "IsT holds 1 images but the labels 2 faces"),
    ("no_images_key", lambda p: cofw_mat(p, IsT=None), "no IsT (the images) beside phisT"),
    ("images_not_cells", lambda p: cofw_mat(p, IsT=np.zeros((2, 1))), "IsT must be a cell array"),
    ("box_shape", lambda p: cofw_mat(p, bboxesT=np.ones((3, 4))), "bboxesT must be 2 x 4, got 3 x 4"),
    ("missing_keys", lambda p: cofw_mat(p, phisT=None, bboxesT=None), "not a COFW .mat: it holds IsT"),
    ("not_a_mat", _text, "not a MATLAB .mat file (ValueError: Unknown mat file type"),
    ("v73", _v73, "a MATLAB v7.3 (HDF5) .mat file, which needs h5py"),
]


@pytest.mark.parametrize("case,make,reason", COFW_FILE_BAD, ids=[c[0] for c in COFW_FILE_BAD])
def test_cofw_bad_file_is_one_named_problem(tmp_path, case, make, reason):
    (tmp_path / "a").mkdir()
    cofw_mat(tmp_path / "a" / "COFW_train.mat", train=True)
    bad = make(tmp_path / "a" / "COFW_test.mat")
    recs, probs = split(get_format("cofw").read(tmp_path / "a", images=tmp_path / "png"))
    assert [r.id for r in recs] == ["cofw_train/0001", "cofw_train/0002"]
    assert len(probs) == 1 and probs[0].path == str(bad) and probs[0].line is None, probs
    assert reason in probs[0].reason, probs[0].reason


# ---- COFW-68 -----------------------------------------------------------------------------------

def cofw68_tree(root, indices=(1, 2, 10), n_boxes: int = 10) -> object:
    ann = root / "test_annotations"
    ann.mkdir(parents=True)
    for i in indices:
        occ = (np.arange(68) % 7 == i % 7).astype(np.uint8)[None]
        scipy.io.savemat(ann / f"{i}_points.mat", {"Points": face68(60 + i, 55, 50) + 1.0, "Occ": occ})
    boxes = np.array([[10 + i, 5, 100, 110] for i in range(1, n_boxes + 1)], np.int16)
    scipy.io.savemat(root / "cofw68_test_bboxes.mat", {"bboxes": boxes})
    return ann


def test_cofw68_folder_reads_in_index_order_with_boxes_and_occlusion(tmp_path):
    cofw68_tree(tmp_path)
    recs, probs = split(get_format("cofw").read(tmp_path, labels_only=True))
    assert not probs
    assert [r.id for r in recs] == ["cofw_test/0001", "cofw_test/0002", "cofw_test/0010"]
    for r, i in zip(recs, (1, 2, 10), strict=True):
        assert r.scheme == "ibug68" and r.source == "cofw68" and r.split == "test"
        assert r.points.tolist() == face68(60 + i, 55, 50).tolist()
        assert r.visible == [k % 7 != i % 7 for k in range(68)]
        assert r.bbox == (10.0 + i - 1, 4.0, 100.0, 110.0)
        assert r.image == f"COFW_test_color.mat#{i}" and r.width is None


def test_cofw68_and_cofw_test_faces_pair_by_id(tmp_path):
    cofw68_tree(tmp_path / "c68", indices=(1, 2))
    c29, _ = split(get_format("cofw").read(cofw_mat(tmp_path / "COFW_test.mat"), labels_only=True))
    c68, _ = split(get_format("cofw").read(tmp_path / "c68", labels_only=True))
    assert [r.id for r in c29] == [r.id for r in c68]


def test_cofw68_finds_exported_images_and_names_missing_ones(tmp_path):
    cofw68_tree(tmp_path / "c68", indices=(1, 2))
    out = tmp_path / "png"
    (out / "cofw_test").mkdir(parents=True)
    write_image(out / "cofw_test" / "0001.png", 140, 120)
    recs, (prob,) = split(get_format("cofw").read(tmp_path / "c68", images=out))
    assert [(r.id, r.width, r.height, r.image) for r in recs] == [
        ("cofw_test/0001", 140, 120, str(out / "cofw_test" / "0001.png"))]
    assert prob.path.endswith("2_points.mat") and "no image" in prob.reason and "0002.png" in prob.reason


COFW68_BAD = [
    ("shape", {"Points": np.ones((68, 3))}, "Points must be 68 x 2, got 68 x 3"),
    ("nan", {"Points": np.where(np.arange(68)[:, None] == 9, np.nan, face68() + 1)}, "Points: point 10 is not finite"),
    ("flag", {"Points": face68() + 1, "Occ": np.full((1, 68), 3)}, "Occ: occlusion flag 1 must be 0 or 1"),
    ("occ_shape", {"Points": face68() + 1, "Occ": np.zeros((1, 29))}, "Occ must be 1 x 68, got 1 x 29"),
    ("no_points", {"Occ": np.zeros((1, 68))}, "not a COFW .mat: it holds Occ"),
]


@pytest.mark.parametrize("case,arrays,reason", COFW68_BAD, ids=[c[0] for c in COFW68_BAD])
def test_cofw68_bad_file_is_a_named_problem(tmp_path, case, arrays, reason):
    ann = cofw68_tree(tmp_path, indices=(1,))
    scipy.io.savemat(ann / "2_points.mat", arrays)
    recs, probs = split(get_format("cofw").read(tmp_path, labels_only=True))
    assert [r.id for r in recs] == ["cofw_test/0001"]
    assert len(probs) == 1 and probs[0].path == str(ann / "2_points.mat"), probs
    assert reason in probs[0].reason, probs[0].reason


def test_cofw68_box_problems_are_named_and_the_faces_kept(tmp_path):
    cofw68_tree(tmp_path, indices=(1, 10), n_boxes=5)
    recs, (prob,) = split(get_format("cofw").read(tmp_path, labels_only=True))
    assert [r.id for r in recs] == ["cofw_test/0001"]
    assert prob.path.endswith("10_points.mat") and "has no box 10 (it has 5)" in prob.reason
    (tmp_path / "cofw68_test_bboxes.mat").write_text("not a mat")
    recs, (prob,) = split(get_format("cofw").read(tmp_path, labels_only=True))
    assert [r.bbox for r in recs] == [None, None]
    assert prob.path.endswith("cofw68_test_bboxes.mat") and "not a MATLAB .mat file" in prob.reason


def test_cofw_box_file_alone_says_what_to_read(tmp_path):
    cofw68_tree(tmp_path)
    _, (prob,) = split(get_format("cofw").read(tmp_path / "cofw68_test_bboxes.mat", labels_only=True))
    assert "read the *_points.mat files" in prob.reason


# ---- guessing and the command line -----------------------------------------------------------

def test_guess_format_finds_the_mat_layouts_and_steals_no_other_folder(tmp_path):
    aflw_pair(tmp_path / "aflw")
    cofw68_tree(tmp_path / "c68")
    (tmp_path / "cofw").mkdir()
    cofw_mat(tmp_path / "cofw" / "COFW_test_color.mat")
    assert guess_format(tmp_path / "aflw") == "aflw2000"
    assert guess_format(tmp_path / "aflw" / "image00001.mat") == "aflw2000"
    assert guess_format(tmp_path / "c68") == "cofw"
    assert guess_format(tmp_path / "c68" / "test_annotations" / "1_points.mat") == "cofw"
    assert guess_format(tmp_path / "cofw") == "cofw"
    assert guess_format(tmp_path / "cofw" / "COFW_test_color.mat") == "cofw"
    other = tmp_path / "lp"  # a 300W-LP-like folder: *.mat beside *.jpg, other names
    other.mkdir()
    scipy.io.savemat(other / "AFW_134212_1_0.mat", {"pt2d": np.ones((2, 68))})
    write_image(other / "AFW_134212_1_0.jpg", 20, 20)
    with pytest.raises(InputError, match="cannot guess"):
        guess_format(other)
    (other / "a.pts").write_text("version: 1\nn_points: 0\n{\n}\n")
    aflw_pair(other, "image00003")
    assert guess_format(other) == "300w"  # the older layout keeps a folder it claimed


def cli(*args):
    from gapkit.cli.main import app

    return runner.invoke(app, [str(a) for a in args])


def test_convert_aflw2000_and_cofw_end_to_end(tmp_path):
    aflw_pair(tmp_path / "aflw")
    res = cli("convert", tmp_path / "aflw", tmp_path / "a.jsonl", "--no-images")
    assert res.exit_code == 0, res.output
    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    pt3d = aflw_arrays()["pt3d_68"].astype(float)
    assert json.loads(line)["points"] == (pt3d[:2].T - 1).tolist()

    mat = cofw_mat(tmp_path / "COFW_test_color.mat")
    res = cli("convert", mat, tmp_path / "c.jsonl", "--no-images")
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["points"] for r in rows] == [(np.stack([p[:29], p[29:58]], 1) - 1).tolist() for p in cofw_phis()]
    res = cli("convert", mat, tmp_path / "c2.jsonl", "-O", f"images={tmp_path / 'png'}", "--to", "manifest")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "png" / "cofw_test" / "0002.png").is_file()
    res = cli("convert", mat, tmp_path / "c3.jsonl")
    assert res.exit_code == 2 and "--no-images" in res.output


# ---- real files (../shared/data) ---------------------------------------------------------------

@pytest.mark.realdata
def test_real_aflw2000_points_fall_on_the_face(shared):
    src = shared / "aflw2000_3d_prnet"
    recs, probs = split(get_format("aflw2000").read(src))
    assert not probs and len(recs) == 16  # make_record's mirrored-shape check passed on each
    for r in recs:
        assert (r.width, r.height) == (450, 450)
        assert (r.points >= 0).all() and (r.points <= 450).all()
        assert r.points[36, 0] < r.points[45, 0] or abs(r.attributes["pose_para"]["yaw"]) > 0.6
    first = next(r for r in recs if r.id == "image00050")
    np.testing.assert_allclose(first.points[:3], [[124.8485, 208.6241], [124.6051, 238.0948],
                                                  [128.7806, 265.6325]], atol=1e-4)  # SOURCE.md, minus 1
    two, probs = split(get_format("aflw2000").read(src, points="pt2d"))
    assert not probs and len(two) == 16
    by_id = {r.id: r for r in recs}
    for r in two:
        raw = scipy.io.loadmat(src / f"{r.id}.mat")["pt2d"]
        missing = np.isnan(r.points[:, 0])
        # the convention's evidence: "not labelled" (-1) went through Matlab's h + 1 - y flip
        assert (raw[0, missing] == -1).all() and (raw[1, missing] == 450 + 2).all()
        # the hand labels and the fitted 68 share one frame: eye, mouth corners and chin agree
        pairs = [(6, 36), (11, 45), (8, 39), (9, 42), (17, 48), (19, 54), (20, 8)]
        d = [np.linalg.norm(r.points[a] - by_id[r.id].points[b]) for a, b in pairs if not missing[a]]
        assert max(d) < 15 and np.median(d) < 6, (r.id, d)


@pytest.mark.realdata
def test_real_cofw68_labels(shared, tmp_path):
    src = shared / "cofw68_annotations"
    recs, probs = split(get_format("cofw").read(src, labels_only=True))
    assert not probs and len(recs) == 507
    assert [r.id for r in recs] == [f"cofw_test/{i:04d}" for i in range(1, 508)]
    assert recs[0].bbox == (63.0, 8.0, 120.0, 116.0)  # [64, 9, 120, 116] in the file
    hidden = np.mean([r.visible.count(False) for r in recs])
    assert hidden == pytest.approx(15.6, abs=0.05)  # SOURCE.md: mean 15.6 occluded points a face
    for r in recs:  # the points lie on the face its 300-W-style box frames
        x, y, w, h = r.bbox
        inside = (r.points[:, 0] > x - w / 4) & (r.points[:, 0] < x + w * 1.25) \
            & (r.points[:, 1] > y - h / 4) & (r.points[:, 1] < y + h * 1.25)
        assert inside.mean() > 0.9, r.id
    res = cli("convert", src, tmp_path / "c68.jsonl", "--from", "cofw", "--no-images")
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "c68.jsonl").read_text().splitlines()) == 507


@pytest.mark.realdata
def test_real_aflw2000_convert_end_to_end(shared, tmp_path):
    res = cli("convert", shared / "aflw2000_3d_prnet", tmp_path / "a.jsonl")
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 16
