"""The table readers (csv, manifest, wflw, datagen): the layouts people download, labels read
without their images, sizes checked against the image, and damage named, never a crash."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gapkit.errors import InputError, Problem
from gapkit.faceset import DataSource, load
from gapkit.formats import get_format

K98 = 196  # WFLW coordinates on a line


def split(items):
    items = list(items)
    return [r for r in items if not isinstance(r, Problem)], [p for p in items if isinstance(p, Problem)]


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


# ---------------------------------------------------------------- WFLW: both layouts


def wflw_lines(fixtures: Path) -> list[list[str]]:
    return [ln.split() for ln in (fixtures / "wflw/list_98pt_rect_attr_test.txt").read_text().splitlines()]


# list name, whether lines carry box and attributes, attributes implied by the list name
WFLW_LAYOUTS = [
    ("list_98pt_rect_attr_test.txt", True, None),
    ("list_98pt_test.txt", False, {}),
    ("list_98pt_test_largepose.txt", False, {"pose": 1}),
    ("list_98pt_test_makeup.txt", False, {"make_up": 1}),
]


@pytest.mark.parametrize("labels_only", [False, True], ids=["images", "labels_only"])
@pytest.mark.parametrize("name,full,implied", WFLW_LAYOUTS, ids=[w[0] for w in WFLW_LAYOUTS])
def test_wflw_reads_both_layouts(tmp_path, fixtures, name, full, implied, labels_only):
    lines = wflw_lines(fixtures)
    rows = lines if full else [p[:K98] + p[-1:] for p in lines]
    (tmp_path / name).write_text("".join(" ".join(r) + "\n" for r in rows))
    if not labels_only:  # label-only reading must not need the images at all
        shutil.copytree(fixtures / "wflw/WFLW_images", tmp_path / "WFLW_images")
    recs, problems = split(get_format("wflw").read(tmp_path / name, labels_only=labels_only))
    assert not problems, problems
    assert [r.id for r in recs] == ["0--Parade/face_0#0", "0--Parade/face_1#0"]
    for rec, parts in zip(recs, lines, strict=True):
        # 0-based pixels, taken as they stand
        np.testing.assert_array_equal(rec.points, np.array(parts[:K98], float).reshape(98, 2))
        assert rec.scheme == "wflw98" and rec.split == "test"
        assert rec.image == str(tmp_path / ("" if labels_only else "WFLW_images") / parts[-1])
        assert (rec.width, rec.height) == ((None, None) if labels_only else (128, 128))
        if full:
            x0, y0, x1, y1 = map(float, parts[K98:K98 + 4])
            assert rec.bbox == (x0, y0, x1 - x0, y1 - y0)
            assert list(rec.attributes.values()) == [int(v) for v in parts[K98 + 4:-1]]
        else:
            assert rec.bbox is None and rec.attributes == implied


# damage to the second line -> a fragment of the reason
WFLW_DAMAGE = [
    ("points-only line cut short", lambda p: p[:K98 - 1] + ["1.5", "2.5"], "last field must be the image path"),
    ("200 fields", lambda p: p[:193] + p[-7:], "expected 207 fields"),
    ("attribute not a number", lambda p: p[:K98 + 4] + ["x"] + p[K98 + 5:], "not a number"),
    ("points-only with inf", lambda p: ["inf"] + p[1:K98] + p[-1:], "non-finite"),
]


@pytest.mark.parametrize("damage,reason", [d[1:] for d in WFLW_DAMAGE], ids=[d[0] for d in WFLW_DAMAGE])
def test_wflw_bad_line_is_named_and_the_rest_read(tmp_path, fixtures, damage, reason):
    first, second = wflw_lines(fixtures)
    path = tmp_path / "list_98pt_test.txt"
    path.write_text(" ".join(first) + "\n" + " ".join(damage(second)) + "\n")
    recs, problems = split(get_format("wflw").read(path, labels_only=True))
    p = only(problems)
    assert (p.path, p.line, p.kind) == (str(path), 2, "bad") and reason in p.reason
    assert [r.id for r in recs] == ["0--Parade/face_0#0"]


def test_wflw_missing_image_names_the_line_and_the_image(tmp_path, fixtures):
    first, _ = wflw_lines(fixtures)
    path = tmp_path / "list_98pt_test.txt"
    path.write_text(" ".join(first[:K98] + ["nowhere/gone.jpg"]) + "\n")
    p = only(split(get_format("wflw").read(path))[1])
    assert (p.path, p.line) == (str(path), 1) and "gone.jpg" in p.reason and "missing" in p.reason


@pytest.mark.parametrize("labels_only", [False, True], ids=["images", "labels_only"])
def test_wflw_finds_images_where_the_release_unpacks_them(tmp_path, fixtures, labels_only):
    lists = tmp_path / "WFLW_annotations/list_98pt_test"
    lists.mkdir(parents=True)
    lines = wflw_lines(fixtures)
    (lists / "list_98pt_test.txt").write_text("".join(" ".join(p[:K98] + p[-1:]) + "\n" for p in lines))
    shutil.copytree(fixtures / "wflw/WFLW_images", tmp_path / "WFLW_images")
    faces, rep = load(DataSource(path=lists / "list_98pt_test.txt", format="wflw", labels_only=labels_only),
                      check_images=not labels_only)
    assert not rep.problems and faces.images == [str(tmp_path / "WFLW_images" / p[-1]) for p in lines]


# ---------------------------------------------------------------- CSV headers


def fixture_faces(fixtures: Path) -> list[tuple[str, list[str]]]:
    """(image name, 136 coordinates) of the fixture's headerless rows."""
    with open(fixtures / "csv/landmarks.csv", newline="") as f:
        return [(r[0], r[1:]) for r in csv.reader(f)]


def tutorial_header(k: int = 68) -> list[str]:
    """The PyTorch data-loading tutorial's face_landmarks.csv header."""
    return ["image_name", *[f"part_{i}_{a}" for i in range(k) for a in "xy"]]


def write_csv(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# header, how a fixture row becomes a table row, expected (width, height) with images
HEADERS = [
    ("pytorch tutorial", tutorial_header(), lambda n, c: [n, *c], (128, 128)),
    ("x1..x68, 1-based", ["file_name", *[f"{a}{i}" for i in range(1, 69) for a in "xy"]],
     lambda n, c: [n, *c], (128, 128)),
    ("id and sizes first", ["id", "image_name", "width", "height", *[f"{a}_{i}" for i in range(68) for a in "xy"]],
     lambda n, c: [f"face-{n}", n, 128, 128, *c], (128, 128)),
]


@pytest.mark.parametrize("labels_only", [False, True], ids=["images", "labels_only"])
@pytest.mark.parametrize("header,row,size", [h[1:] for h in HEADERS], ids=[h[0] for h in HEADERS])
def test_csv_other_headers_are_read_by_their_column_names(tmp_path, fixtures, header, row, size, labels_only):
    faces = fixture_faces(fixtures)
    path = write_csv(tmp_path / "face_landmarks.csv", [header, *[row(n, c) for n, c in faces]])
    if not labels_only:
        for n, _ in faces:
            shutil.copy(fixtures / "csv/images" / n, tmp_path / n)
    recs, problems = split(get_format("csv").read(path, labels_only=labels_only))
    assert not problems, problems  # the header row itself is no face
    assert len(recs) == len(faces)
    sized = "width" in header
    for rec, (name, coords) in zip(recs, faces, strict=True):
        np.testing.assert_array_equal(rec.points, np.array(coords, float).reshape(68, 2))
        assert rec.scheme == "ibug68" and rec.image == str(tmp_path / name)
        assert rec.id == (f"face-{name}" if sized else Path(name).stem)
        assert (rec.width, rec.height) == (size if sized or not labels_only else (None, None))


# header -> fragment of the one error, which names the file and line 1
BAD_HEADERS = [
    ("no image column", ["who", *tutorial_header()[1:]], "no image column"),
    ("no point columns", ["image_name", "left_eye", "right_eye"], "no point columns"),
    ("a point without y", [*tutorial_header()[:-1], "part_67_z"], "point 67 is not"),
    ("a gap in the numbers", ["image_name", *[f"part_{i}_{a}" for i in (*range(33), *range(34, 69))
                                              for a in "xy"]], "point 33 is not"),
    ("two x columns", ["image_name", "x0", "part_0_x", "y0"], "two x columns for point 0"),
    ("7 points", tutorial_header(7), "7 points match no known face scheme"),
    ("gapkit's, cut short", ["id", "image", "width", "x0", "y0"], "gapkit's own header lacks height, scheme"),
]


@pytest.mark.parametrize("header,reason", [b[1:] for b in BAD_HEADERS], ids=[b[0] for b in BAD_HEADERS])
def test_csv_header_that_cannot_be_read_is_one_error_at_line_1(tmp_path, header, reason):
    path = write_csv(tmp_path / "t.csv", [header, ["a.jpg", *["1"] * (len(header) - 1)]])
    with pytest.raises(InputError, match="header not understood") as err:
        load(DataSource(path=path, format="csv"))
    assert f"{path}:1:" in str(err.value) and reason in str(err.value)


# how the first face's coordinates are damaged -> the reason for line 1
FIRST_ROW_DAMAGE = [
    ("a word", lambda c: ["abc", *c[1:]], "bad value"),
    ("all empty", lambda c: [""] * len(c), "every point is missing"),
]


@pytest.mark.parametrize("damage,reason", [d[1:] for d in FIRST_ROW_DAMAGE], ids=[d[0] for d in FIRST_ROW_DAMAGE])
def test_csv_damaged_first_row_is_a_face_not_a_header(tmp_path, fixtures, damage, reason):
    (name, coords), second = fixture_faces(fixtures)
    path = write_csv(tmp_path / "t.csv", [[name, *damage(coords)], [second[0], *second[1]]])
    recs, problems = split(get_format("csv").read(path, labels_only=True))
    p = only(problems)
    assert p.line == 1 and reason in p.reason and [r.id for r in recs] == ["person_1"]


def test_empty_csv_holds_nothing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="holds nothing csv reads"):
        load(DataSource(path=path, format="csv"))


# ---------------------------------------------------------------- sizes against the image


def gapkit_csv(tmp_path: Path, fixtures: Path) -> Path:
    recs = split(get_format("csv").read(fixtures / "csv/landmarks.csv", images=fixtures / "csv/images"))[0]
    out = tmp_path / "gapkit.csv"
    list(get_format("csv").write(recs, out))
    return out


def manifest(tmp_path: Path, fixtures: Path) -> Path:
    recs = split(get_format("csv").read(fixtures / "csv/landmarks.csv", images=fixtures / "csv/images"))[0]
    out = tmp_path / "faces.jsonl"
    list(get_format("manifest").write(recs, out))
    return out


def edit_csv(path: Path, line: int, column: str, value: str) -> None:
    rows = list(csv.reader(open(path, newline="")))
    rows[line - 1][rows[0].index(column)] = value
    write_csv(path, rows)


def edit_manifest(path: Path, line: int, key: str, value) -> None:
    lines = path.read_text().splitlines()
    d = json.loads(lines[line - 1])
    if value is None:
        d.pop(key)
    else:
        d[key] = value
    lines[line - 1] = json.dumps(d)
    path.write_text("\n".join(lines) + "\n")


def tutorial_with_sizes(tmp_path: Path, fixtures: Path) -> Path:
    faces = fixture_faces(fixtures)
    header = ["image_name", "width", "height", *tutorial_header()[1:]]
    return write_csv(tmp_path / "sized.csv", [header, *[[n, 128, 128, *c] for n, c in faces]])


# format, table maker, editor(path) of the 2nd face, the line it is on, the size the file now gives
SIZES = [
    ("csv", gapkit_csv, lambda p: edit_csv(p, 3, "width", "200"), 3, "200x128"),
    ("csv", tutorial_with_sizes, lambda p: edit_csv(p, 3, "height", "64"), 3, "128x64"),
    ("manifest", manifest, lambda p: edit_manifest(p, 2, "width", 7) or edit_manifest(p, 2, "height", None), 2,
     "7x?"),
]


@pytest.mark.parametrize("fmt,make,edit,line,given", SIZES, ids=[f"{s[0]}-{s[4]}" for s in SIZES])
def test_size_that_does_not_match_the_image_is_named(tmp_path, fixtures, fmt, make, edit, line, given):
    path = make(tmp_path, fixtures)
    edit(path)
    faces, rep = load(DataSource(path=path, format=fmt, options={"images": fixtures / "csv/images"}
                                 if make is tutorial_with_sizes else {}))
    p = only(rep.problems)
    assert (p.path, p.line, p.kind) == (str(path), line, "bad")
    assert f"size {given} does not match image" in p.reason and "person_1.jpg (128x128)" in p.reason
    assert faces.ids == ["person_0"]
    # without the images the file's own sizes stand: nothing to compare with
    w, h = (int(v) if v != "?" else None for v in given.split("x"))
    faces, rep = load(DataSource(path=path, format=fmt, labels_only=True))
    assert not rep.problems and (faces[1].width, faces[1].height) == (w, h)


def test_manifest_sizes_are_compared_where_images_are_opened(tmp_path, fixtures):
    # A line that gives both sizes is read as it stands (no image opened to load a manifest);
    # convert and validate open every image, and there a wrong size is named.
    path = manifest(tmp_path, fixtures)
    edit_manifest(path, 2, "height", 90)
    faces, rep = load(DataSource(path=path, format="manifest"))
    assert not rep.problems and faces[1].height == 90
    faces, rep = load(DataSource(path=path, format="manifest"), check_images=True)
    p = only(rep.problems)
    assert p.path.endswith("person_1.jpg") and "says the image is 128x90, the file is 128x128" in p.reason
    assert faces.ids == ["person_0"]


@pytest.mark.parametrize("fmt,make", [("csv", gapkit_csv), ("manifest", manifest)])
def test_sizes_left_out_are_taken_from_the_image(tmp_path, fixtures, fmt, make):
    path = make(tmp_path, fixtures)
    if fmt == "csv":
        edit_csv(path, 2, "width", "")
        edit_csv(path, 2, "height", "")
    else:
        edit_manifest(path, 1, "width", None)
        edit_manifest(path, 1, "height", None)
    faces, rep = load(DataSource(path=path, format=fmt))
    assert not rep.problems and (faces[0].width, faces[0].height) == (128, 128)
    faces, rep = load(DataSource(path=path, format=fmt, labels_only=True))
    assert not rep.problems and (faces[0].width, faces[0].height) == (None, None)


def test_csv_writes_unknown_sizes_as_empty_cells(tmp_path, fixtures):
    recs = split(get_format("csv").read(fixtures / "csv/landmarks.csv", labels_only=True))[0]
    assert {(r.width, r.height) for r in recs} == {(None, None)}
    list(get_format("csv").write(recs, tmp_path / "out.csv"))
    back = split(get_format("csv").read(tmp_path / "out.csv", labels_only=True))[0]
    assert [(r.id, r.width, r.height) for r in back] == [(r.id, None, None) for r in recs]
    np.testing.assert_array_equal(back[0].points, recs[0].points)


# ---------------------------------------------------------------- label-only reading, all four


def wflw_copy(tmp_path: Path, fixtures: Path) -> Path:
    shutil.copy(fixtures / "wflw/list_98pt_rect_attr_test.txt", tmp_path)
    return tmp_path / "list_98pt_rect_attr_test.txt"


def headerless_csv(tmp_path: Path, fixtures: Path) -> Path:
    shutil.copy(fixtures / "csv/landmarks.csv", tmp_path)
    return tmp_path / "landmarks.csv"


def datagen_copy(tmp_path: Path, fixtures: Path) -> Path:
    shutil.copytree(fixtures / "datagen", tmp_path / "dg")
    for png in (tmp_path / "dg").rglob("*.png"):
        png.unlink()
    return tmp_path / "dg"


def datagen_square(tmp_path: Path, fixtures: Path) -> Path:
    root = datagen_copy(tmp_path, fixtures)
    for cam in root.glob("*/camera"):
        (cam / "camera_metadata.json").write_text(json.dumps({"resolution_px": {"x": 128.0, "y": 128.0}}))
    return root


def datagen_oblong(tmp_path: Path, fixtures: Path) -> Path:
    root = datagen_copy(tmp_path, fixtures)
    for cam in root.glob("*/camera"):
        (cam / "camera_metadata.json").write_text(json.dumps({"resolution_px": {"x": 128.0, "y": 96.0}}))
    return root


def manifest_no_images(tmp_path: Path, fixtures: Path) -> Path:
    path = manifest(tmp_path, fixtures)
    edit_manifest(path, 1, "image", str(tmp_path / "gone/person_0.jpg"))
    edit_manifest(path, 2, "image", "gone/person_1.jpg")
    return path


# format, maker (no image anywhere), sizes the records must have, the image paths' endings
LABELS_ONLY = [
    ("wflw", wflw_copy, (None, None), "/0--Parade/face_0.jpg"),
    ("csv", headerless_csv, (None, None), "person_0.jpg"),
    ("manifest", manifest_no_images, (128, 128), "gone/person_0.jpg"),
    ("datagen", datagen_copy, (None, None), "datapoint_00001/camera/visible_spectrum_01.png"),
    ("datagen", datagen_square, (128, 128), "datapoint_00001/camera/visible_spectrum_01.png"),
    ("datagen", datagen_oblong, (None, None), "datapoint_00001/camera/visible_spectrum_01.png"),
]


@pytest.mark.parametrize("fmt,make,size,image", LABELS_ONLY, ids=[f"{s[0]}-{s[1].__name__}" for s in LABELS_ONLY])
def test_labels_read_without_their_images(tmp_path, fixtures, fmt, make, size, image):
    path = make(tmp_path, fixtures)
    faces, rep = load(DataSource(path=path, format=fmt, labels_only=True))
    assert not rep.problems and len(faces) == 2
    assert {(r.width, r.height) for r in faces} == {size}
    assert faces[0].image.endswith(image) and Path(faces[0].image).is_absolute()
    if fmt != "manifest":  # read with their images, each is a missing-image problem
        with_images, rep = load(DataSource(path=path, format=fmt))
        assert len(with_images) == 0 and len(rep.problems) == 2
        assert all("image file is missing" in p.reason for p in rep.problems)


def test_datagen_labels_only_keeps_row_col_swap(tmp_path, fixtures):
    full = split(get_format("datagen").read(fixtures / "datagen"))[0]
    bare = split(get_format("datagen").read(datagen_copy(tmp_path, fixtures), labels_only=True))[0]
    doc = json.loads((fixtures / "datagen/datapoint_00002/camera/key_points/face_standard_key_points.json")
                     .read_text())
    p = doc["face"]["standard"]["01"]["pixel_2d"]
    assert bare[1].points[0].tolist() == [p["y"], p["x"]]  # x is the row
    for a, b in zip(full, bare, strict=True):
        np.testing.assert_array_equal(a.points, b.points)
        assert (a.bbox, a.visible, a.attributes) == (b.bbox, b.visible, b.attributes)


# ---------------------------------------------------------------- Datagen JSON of the wrong type

# file in datapoint_00002, its content, fragment of the reason
DATAGEN_TYPES = [
    ("camera/environment.json", ["visible_spectrum_01.png"], "must hold a JSON object, not a list"),
    ("camera/environment.json", "visible_spectrum_01.png", "must hold a JSON object, not a string"),
    ("camera/environment.json", {"environments": "x"}, "environments must be a list of objects"),
    ("camera/environment.json", {"environments": [["x"]]}, "environments must be a list of objects"),
    ("camera/environment.json", {"environments": [{"image_name": 5}]}, "image_name must be a file name"),
    ("actor_metadata.json", [{"face_expression": {"name": "happy"}}], "must hold a JSON object, not a list"),
    ("actor_metadata.json", "happy", "must hold a JSON object, not a string"),
    ("actor_metadata.json", {"face_expression": "happy"}, "face_expression must be an object, not a string"),
    ("camera/face_bounding_box.json", [1, 2, 3, 4], "must hold a JSON object, not a list"),
    ("camera/face_bounding_box.json", {"min_x": "a", "min_y": 1, "max_x": 2, "max_y": 3}, "face box needs"),
    ("camera/key_points/face_standard_key_points.json", 12, "must hold a JSON object, not a number"),
]


@pytest.mark.parametrize("labels_only", [False, True], ids=["images", "labels_only"])
@pytest.mark.parametrize("rel,content,reason", DATAGEN_TYPES, ids=[f"{d[0].split('/')[-1]}-{type(d[1]).__name__}"
                                                                   f"-{i}" for i, d in enumerate(DATAGEN_TYPES)])
def test_datagen_json_of_the_wrong_type_is_named(tmp_path, fixtures, rel, content, reason, labels_only):
    root = tmp_path / "dg"
    shutil.copytree(fixtures / "datagen", root)
    bad = root / "datapoint_00002" / rel
    bad.write_text(json.dumps(content))
    faces, rep = load(DataSource(path=root, format="datagen", labels_only=labels_only), check_images=not labels_only)
    p = only(rep.problems)
    assert (p.path, p.kind) == (str(bad), "bad") and reason in p.reason
    assert faces.ids == ["datapoint_00001"]


# ---------------------------------------------------------------- the guard and folders


def first_call_fails(real):
    calls = []

    def build(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)
    return build


# module, source maker, where the internal problem must be (path ending, line)
GUARDED = [
    ("csv_table", "csv", headerless_csv, "landmarks.csv", 1),
    ("manifest", "manifest", manifest, "faces.jsonl", 1),
    ("wflw", "wflw", lambda t, f: wflw_copy(t, f), "list_98pt_rect_attr_test.txt", 1),
    ("datagen", "datagen", datagen_copy, "datapoint_00001/camera/key_points/face_standard_key_points.json", None),
]


@pytest.mark.parametrize("module,fmt,make,where,line", GUARDED, ids=[g[1] for g in GUARDED])
def test_an_unexpected_exception_loses_one_record_not_the_run(tmp_path, fixtures, monkeypatch, module, fmt, make,
                                                              where, line):
    import importlib

    mod = importlib.import_module(f"gapkit.formats.{module}")
    monkeypatch.setattr(mod, "make_record", first_call_fails(mod.make_record))
    path = make(tmp_path, fixtures)
    recs, problems = split(get_format(fmt).read(path, labels_only=True))
    p = only(problems)
    assert p.kind == "internal" and p.path.endswith(where) and p.line == line
    assert "RuntimeError: boom" in p.reason and "Traceback" in p.detail
    assert len(recs) == 1


@pytest.mark.parametrize("fmt", ["csv", "manifest", "wflw"])
def test_a_folder_given_to_a_one_file_format_cannot_start(tmp_path, fmt):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(InputError, match=f"is a folder, but {fmt} reads one file: a") as err:
        load(DataSource(path=tmp_path, format=fmt))
    assert str(tmp_path) in str(err.value)


# ---------------------------------------------------------------- real files in ../shared/data


@pytest.mark.realdata
def test_datagen_1k_set_without_renders_reads_labels_only(shared):
    root = shared / "datagen_dgutils/faces_1k_no_rgb"
    faces, rep = load(DataSource(path=root, format="datagen", labels_only=True))
    assert not rep.problems and len(faces) == 11
    assert {(r.width, r.height) for r in faces} == {(1024, 1024)}  # camera_metadata's square resolution
    # datapoint_00011's camera is behind the head: no point visible, its projection a mirror image
    assert rep.not_faces == {"no key point is visible from this camera": 1}
    faces, rep = load(DataSource(path=root, format="datagen"))
    assert len(faces) == 0 and len(rep.problems) == 11
    assert all("image file is missing" in p.reason for p in rep.problems)


@pytest.mark.realdata
def test_datagen_real_csv_reads_every_row_labels_only(shared):
    path = shared / "datagen_dgutils/real_lfw_68/keypoints.csv"
    rows = list(csv.reader(open(path, newline="")))
    faces, rep = load(DataSource(path=path, format="csv", options={"images": path.parent / "images"},
                                 labels_only=True))
    assert not rep.problems and len(faces) == len(rows)
    np.testing.assert_array_equal(faces[0].points, np.array(rows[0][1:], float).reshape(68, 2))
    with_images, rep = load(DataSource(path=path, format="csv", options={"images": path.parent / "images"}))
    assert len(with_images) == len(list((path.parent / "images").glob("*.jpg")))
    assert all(p.line and "image file is missing" in p.reason for p in rep.problems)
