"""The readers of one text annotation per image (300w, menpo, facesynthetics) and the .pts
parser they share: the per-record guard, .pts header counts, headerless .pts, the ``images``
folder option (300-VW), the LJSON face group, ``seg`` stored relative, labels without images,
and file names that are not UTF-8. Every input is generated in tmp_path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gapkit.errors import Problem, UnknownSchemeError
from gapkit.faceset import DataSource, load
from gapkit.formats import check_options, get_format, info
from gapkit.formats.manifest import read_manifest, write_manifest

FIX_PTS = "300w/lfpw/trainset/image_0001.pts"
FIX_PNG = "300w/lfpw/trainset/image_0001.png"


def split(items) -> tuple[list, list[Problem]]:
    items = list(items)
    return [r for r in items if not isinstance(r, Problem)], [p for p in items if isinstance(p, Problem)]


def pts_lines(fixtures: Path) -> list[str]:
    """The 68 'x y' lines of a real-looking .pts."""
    return (fixtures / FIX_PTS).read_text().splitlines()[3:71]


def file_points(lines: list[str]) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in lines])


def pts_file(lines: list[str], n_points: str | None = None) -> str:
    return f"version: 1\nn_points: {n_points or len(lines)}\n{{\n" + "\n".join(lines) + "\n}\n"


def ljson(groups: dict[str, np.ndarray | list]) -> str:
    """LJSON v3 text: each group's (x, y) points stored as [y, x]."""
    return json.dumps({"version": 3, "groups": {
        n: {"landmarks": {"points": [[p[1], p[0]] for p in np.asarray(pts).tolist()]}} for n, pts in groups.items()}})


def face68(fixtures: Path) -> np.ndarray:
    return file_points(pts_lines(fixtures)) - 1


# ---------------------------------------------------------------- 1. the per-record guard

@pytest.mark.parametrize("fmt, ann, target", [
    ("300w", "a.pts", "gapkit.formats.ibug300w.read_pts"),
    ("300w", "a.pts", "gapkit.formats.ibug300w.image_for"),
    ("menpo", "a.pts", "gapkit.formats.menpo.read_pts"),
    ("menpo", "a.ljson", "gapkit.formats.menpo._read_ljson"),
    ("menpo", "a.pts", "gapkit.formats.menpo.image_for"),
    ("facesynthetics", "a_ldmks.txt", "gapkit.formats.facesynthetics.parse_ldmks"),
    ("facesynthetics", "a_ldmks.txt", "gapkit.formats.facesynthetics.image_for"),
])
def test_an_unexpected_exception_in_one_record_is_named_and_the_run_goes_on(tmp_path, fixtures, monkeypatch,
                                                                             fmt, ann, target):
    suffix = ann[1:]
    src = {"300w": fixtures / FIX_PTS, "menpo": fixtures / FIX_PTS,
           "facesynthetics": fixtures / "facesynthetics/000000_ldmks.txt"}[fmt]
    img = fixtures / ("facesynthetics/000000.png" if fmt == "facesynthetics" else FIX_PNG)
    for stem in ("a", "b"):
        if suffix == ".ljson":
            (tmp_path / f"{stem}.ljson").write_text(ljson({"LJSON": face68(fixtures)}))
        else:
            shutil.copy(src, tmp_path / f"{stem}{suffix}")
        shutil.copy(img, tmp_path / f"{stem}.png")
    module, name = target.rsplit(".", 1)
    real = getattr(__import__(module, fromlist=[name]), name)

    def boom(first, *args, **kw):
        if Path(first).name == ann:
            raise ZeroDivisionError("a reader bug")
        return real(first, *args, **kw)

    monkeypatch.setattr(target, boom)
    recs, probs = split(get_format(fmt).read(tmp_path))
    assert [r.id for r in recs] == ["b"]
    assert len(probs) == 1 and probs[0].kind == "internal" and Path(probs[0].path).name == ann
    assert "ZeroDivisionError: a reader bug" in probs[0].reason and probs[0].detail


@pytest.mark.parametrize("fmt", ["300w", "menpo", "facesynthetics"])
def test_an_unknown_scheme_stops_the_job_once(fixtures, fmt):
    with pytest.raises(UnknownSchemeError, match="unknown scheme 'nope'"):
        list(get_format(fmt).read(fixtures / fmt, scheme="nope"))


# ---------------------------------------------------------------- 2. .pts header counts

@pytest.mark.parametrize("n_points, body, line, reason", [
    ("-5", 68, 2, "n_points must be a positive count, got -5"),
    ("0", 68, 2, "n_points must be a positive count, got 0"),
    ("10000000000000", 68, 2, "n_points says 10000000000000, but only 68 lines lie between '{' and '}' (line 72)"),
    ("100", 68, 2, "n_points says 100, but only 68 lines lie between '{' and '}'"),
    ("sixty-eight", 68, 2, "bad n_points line"),
    # a body cut short (no '}') is named where it stops, with the header's count
    ("10000000000000", 30, 34, "file is truncated: n_points says 10000000000000, found 30 points"),
    ("68", 67, 71, "file is truncated: n_points says 68, found 67 points"),
    ("67", 68, 71, "expected '}' after 67 points"),
])
@pytest.mark.parametrize("fmt", ["300w", "menpo"])
def test_a_pts_count_that_cannot_be_is_refused_before_it_sizes_anything(tmp_path, fixtures, fmt, n_points, body,
                                                                        line, reason):
    lines = pts_lines(fixtures)
    text = pts_file(lines[:body], n_points)
    if body < 68 and n_points != "68":
        text = text[: text.rindex("}")]  # cut short: no closing brace
    (tmp_path / "bad.pts").write_text(text)
    shutil.copy(fixtures / FIX_PTS, tmp_path / "good.pts")
    for stem in ("bad", "good"):
        shutil.copy(fixtures / FIX_PNG, tmp_path / f"{stem}.png")
    recs, probs = split(get_format(fmt).read(tmp_path))
    assert [r.id for r in recs] == ["good"]
    assert len(probs) == 1
    p = probs[0]
    assert (Path(p.path).name, p.line, p.kind) == ("bad.pts", line, "bad"), p
    assert reason in p.reason


# ---------------------------------------------------------------- 3. headerless .pts

def _headerless(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name, make, scheme", [
    ("plain", _headerless, "ibug68"),
    ("crlf_bom_blank_tail", lambda ls: "\ufeff" + "\r\n".join(ls) + "\r\n\r\n", "ibug68"),
    ("tabs_and_spaces", lambda ls: "\n".join(f"  {ln.replace(' ', chr(9))} " for ln in ls) + "\n", "ibug68"),
])
def test_headerless_pts_reads_as_one_based_points(tmp_path, fixtures, name, make, scheme):
    lines = pts_lines(fixtures)
    (tmp_path / "a.pts").write_bytes(make(lines).encode("utf-8"))
    shutil.copy(fixtures / FIX_PNG, tmp_path / "a.png")
    for fmt in ("300w", "menpo"):
        recs, probs = split(get_format(fmt).read(tmp_path))
        assert not probs, probs
        assert recs[0].scheme == scheme
        assert recs[0].points.tolist() == (file_points(lines) - 1).tolist()  # exact: same 1-based origin


def test_headerless_scheme_comes_from_the_point_count(tmp_path, fixtures):
    wflw = split(get_format("wflw").read(fixtures / "wflw/list_98pt_rect_attr_test.txt"))[0][0]
    (tmp_path / "w.pts").write_text(_headerless([f"{x + 1!r} {y + 1!r}" for x, y in wflw.points.tolist()]))
    rec = split(get_format("300w").read(tmp_path / "w.pts", labels_only=True))[0][0]
    assert rec.scheme == "wflw98"
    np.testing.assert_allclose(rec.points, wflw.points, rtol=0, atol=1e-12)


@pytest.mark.parametrize("damage, line, reason", [
    (lambda ls: ls[:29] + ["abc 5"] + ls[30:], 30, "not a number in 'abc 5'"),
    (lambda ls: ls[:9] + ["1 2 3"] + ls[10:], 10, "expected 'x y', got '1 2 3'"),
    (lambda ls: ls[:4] + ["nan 12.5"] + ls[5:], 5, "non-finite coordinate"),
    (lambda ls: ls + ["}"], 69, "expected 'x y', got '}'"),
    (lambda ls: ["hello world", *ls], 1, "missing 'version:' header (nor is it a headerless file"),
    (lambda ls: ["n_points: 68", *ls], 1, "missing 'version:' header"),
    (lambda ls: ls[:67], None, "67 points match no known face scheme"),
    (lambda ls: ["1.5 " * 100_000], 1, "missing 'version:' header"),
])
def test_damaged_headerless_pts_is_named_by_line_and_garbage_is_not_accepted(tmp_path, fixtures, damage, line,
                                                                             reason):
    (tmp_path / "bad.pts").write_text(_headerless(damage(pts_lines(fixtures))))
    shutil.copy(fixtures / FIX_PTS, tmp_path / "good.pts")
    recs, probs = split(get_format("300w").read(tmp_path, labels_only=True))
    assert [r.id for r in recs] == ["good"]
    assert [(Path(p.path).name, p.line) for p in probs] == [("bad.pts", line)]
    assert reason in probs[0].reason, probs[0].reason


# ---------------------------------------------------------------- 4. the images folder (300-VW)

def _vw_layout(root: Path, fixtures: Path, fmt: str, seg: str | None = None) -> None:
    """NNN/annot/<annotation> beside NNN/imgs/<image>, two videos of two frames each."""
    for video in ("001", "401"):
        for frame in ("000001", "000002"):
            annot, imgs = root / video / "annot", root / video / "imgs"
            annot.mkdir(parents=True, exist_ok=True)
            imgs.mkdir(parents=True, exist_ok=True)
            if fmt == "facesynthetics":
                shutil.copy(fixtures / "facesynthetics/000000_ldmks.txt", annot / f"{frame}_ldmks.txt")
                Image.open(fixtures / "facesynthetics/000000.png").save(imgs / f"{frame}.png")
                if seg:
                    Image.new("L", (128, 128)).save(root / video / seg / f"{frame}_seg.png")
            else:
                shutil.copy(fixtures / FIX_PTS, annot / f"{frame}.pts")
                Image.open(fixtures / FIX_PNG).convert("RGB").save(imgs / f"{frame}.jpg")


VW_IDS = ["001/annot/000001", "001/annot/000002", "401/annot/000001", "401/annot/000002"]


@pytest.mark.parametrize("fmt", ["300w", "menpo", "facesynthetics"])
@pytest.mark.parametrize("where", ["../imgs", "absolute"])
def test_the_images_option_reads_the_300vw_layout(tmp_path, fixtures, fmt, where):
    root = tmp_path / "300vw"
    _vw_layout(root, fixtures, fmt)
    ext = ".png" if fmt == "facesynthetics" else ".jpg"
    if where == "absolute":  # one folder for every annotation: give a single video
        root, ids = root / "401/annot", ["000001", "000002"]
        images = str(tmp_path / "300vw/401/imgs")
    else:
        ids, images = VW_IDS, where
    assert split(get_format(fmt).read(root))[0] == []  # beside: nothing there
    faces, rep = load(DataSource(path=root, format=fmt, options={"images": images}))
    assert not rep.problems, rep.problems
    assert sorted(faces.ids) == ids
    for r in faces:
        video = "401" if where == "absolute" else r.id[:3]
        assert r.image == str(tmp_path / "300vw" / video / "imgs" / (Path(r.id).name + ext))
        assert (r.width, r.height) == ((128, 128) if fmt == "facesynthetics" else (120, 128))


@pytest.mark.parametrize("fmt", ["300w", "menpo", "facesynthetics"])
def test_a_missing_image_names_the_folder_that_was_searched(tmp_path, fixtures, fmt):
    _vw_layout(tmp_path, fixtures, fmt)
    for img in (tmp_path / "001/imgs").iterdir():
        img.unlink()
    recs, probs = split(get_format(fmt).read(tmp_path, images="../imgs"))
    assert sorted(r.id for r in recs) == VW_IDS[2:]
    assert len(probs) == 2 and all(f"no image in {tmp_path}/001/annot/../imgs" in p.reason for p in probs)


@pytest.mark.parametrize("fmt", ["300w", "menpo", "facesynthetics"])
def test_the_images_option_is_declared_for_reading_apart_from_the_writer_option(fmt):
    fi = info(fmt)
    assert "images" in fi.read_options and fi.labels_only
    assert check_options(fmt, {"images": "../imgs"}) == {"images": "../imgs"}
    if fmt != "menpo":  # the writers' images=link|copy|none lives in its own dict
        assert "link | copy | none" in fi.write_options["images"]
        assert check_options(fmt, {"images": "copy"}, write=True) == {"images": "copy"}
        assert fi.read_options["images"] != fi.write_options["images"]


def test_the_images_option_from_the_command_line(tmp_path, fixtures):
    from gapkit.cli.main import app

    _vw_layout(tmp_path / "vw", fixtures, "300w")
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "vw"), str(tmp_path / "o.jsonl"), "--from", "300w",
                                   "-O", "images=../imgs"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 4


# ---------------------------------------------------------------- 5. the LJSON face group

@pytest.mark.parametrize("groups, scheme, chosen, kept", [
    (["dlib5", "LJSON"], None, "LJSON", {"dlib5": 5}),
    (["pupils", "LJSON", "other68"], None, "LJSON", {"pupils": 2, "other68": 68}),
    (["LJSON", "dlib5"], None, "LJSON", {"dlib5": 5}),
    (["dlib5", "LJSON", "wflw"], "wflw98", "wflw", {"dlib5": 5, "LJSON": 68}),
])
def test_the_ljson_face_group_is_chosen_by_scheme_not_order(tmp_path, fixtures, groups, scheme, chosen, kept):
    wflw = split(get_format("wflw").read(fixtures / "wflw/list_98pt_rect_attr_test.txt"))[0][0].points
    shapes = {"dlib5": face68(fixtures)[[36, 45, 30, 48, 54]], "pupils": face68(fixtures)[[37, 44]],
              "LJSON": face68(fixtures), "other68": face68(fixtures) + 3, "wflw": wflw}
    (tmp_path / "a.ljson").write_text(ljson({g: shapes[g] for g in groups}))
    recs, probs = split(get_format("menpo").read(tmp_path, scheme=scheme, labels_only=True))
    assert not probs, probs
    r = recs[0]
    assert r.attributes["ljson_group"] == chosen and r.points.tolist() == shapes[chosen].tolist()
    assert {n: len(p) for n, p in r.attributes["ljson_groups"].items()} == kept
    assert r.attributes["ljson_groups"][next(iter(kept))] == shapes[next(iter(kept))].tolist()  # (x, y) again


@pytest.mark.parametrize("groups, scheme, reason", [
    (["dlib5"], None, "no group has the 68 points of a 68-point face; pass the scheme option"),
    (["dlib5", "pupils"], "wflw98", "no group has the 98 points of scheme wflw98 (groups dlib5: 5, pupils: 2)"),
])
def test_an_ljson_without_the_face_group_is_refused_with_its_groups(tmp_path, fixtures, groups, scheme, reason):
    shapes = {"dlib5": face68(fixtures)[[36, 45, 30, 48, 54]], "pupils": face68(fixtures)[[37, 44]]}
    (tmp_path / "a.ljson").write_text(ljson({g: shapes[g] for g in groups}))
    recs, probs = split(get_format("menpo").read(tmp_path, scheme=scheme, labels_only=True))
    assert not recs and len(probs) == 1 and reason in probs[0].reason and probs[0].path.endswith("a.ljson")


# ---------------------------------------------------------------- 6. facesynthetics seg, relative

@pytest.mark.parametrize("images, seg_in, stored", [
    (None, "imgs", "000001_seg.png"),              # the FaceSynthetics layout: all in one folder
    ("../imgs", "imgs", "000001_seg.png"),
    ("../imgs", "annot", "../annot/000001_seg.png"),
    ("../imgs", None, None),
])
def test_seg_is_stored_relative_and_survives_a_moved_tree(tmp_path, fixtures, images, seg_in, stored):
    tree = tmp_path / "tree"
    _vw_layout(tree, fixtures, "facesynthetics", seg=seg_in)
    src = tree / "001" / ("annot" if images else "imgs")
    if images is None:  # everything in one folder
        for f in (tree / "001/annot").iterdir():
            shutil.move(f, src / f.name)
    recs, probs = split(get_format("facesynthetics").read(src, images=images))
    assert not probs, probs
    rec = next(r for r in recs if r.id == "000001")
    assert rec.attributes.get("seg") == stored
    if stored is None:
        return
    assert (Path(rec.image).parent / stored).is_file()
    write_manifest(recs, tree / "faces.jsonl")
    assert str(tmp_path) not in (tree / "faces.jsonl").read_text()  # no machine paths leak
    moved = shutil.move(tree, tmp_path / "moved")
    back = next(r for r in read_manifest(Path(moved) / "faces.jsonl") if r.id == "000001")
    assert (Path(back.image).parent / back.attributes["seg"]).is_file()


# ---------------------------------------------------------------- 7. labels without images

@pytest.mark.parametrize("fmt, folder, image_of", [
    ("300w", "300w", lambda ann: ann.with_suffix("")),
    ("menpo", "menpo", lambda ann: ann.with_suffix("")),   # portrait.pts and sketch.ljson
    ("facesynthetics", "facesynthetics", lambda ann: ann.with_name(ann.name.replace("_ldmks.txt", ".png"))),
])
def test_labels_only_reads_without_images_and_never_looks_for_them(tmp_path, fixtures, monkeypatch, fmt, folder,
                                                                   image_of):
    with_images = {r.id: r for r in split(get_format(fmt).read(fixtures / folder))[0]}
    shutil.copytree(fixtures / folder, tmp_path / "d")
    for p in list((tmp_path / "d").rglob("*")):
        if p.suffix in (".png", ".jpg"):
            p.unlink()

    def never(*_a, **_k):
        raise AssertionError("opened an image")

    monkeypatch.setattr("gapkit.formats.pts.image_size", never)  # a stat for the path is allowed, a read is not
    faces, rep = load(DataSource(path=tmp_path / "d", format=fmt, labels_only=True))
    assert not rep.problems, rep.problems
    assert sorted(faces.ids) == sorted(with_images)
    anns = {a.relative_to(tmp_path / "d").as_posix(): a for a in (tmp_path / "d").rglob("*")
            if a.suffix in (".pts", ".ljson", ".txt")}
    for r in faces:
        ann = next(a for rel, a in anns.items() if rel.startswith(r.id + (".", "_")[fmt == "facesynthetics"]))
        assert r.width is None and r.height is None
        assert r.image == str(image_of(ann))
        np.testing.assert_array_equal(r.points, with_images[r.id].points)  # NaN (missing) included


# ---------------------------------------------------------------- 8. file names that are not UTF-8

@pytest.mark.parametrize("fmt, files", [
    ("300w", (b".pts", b".png")),
    ("menpo", (b".pts", b".png")),
    ("menpo", (b".ljson", b".png")),
    ("facesynthetics", (b"_ldmks.txt", b".png")),
])
@pytest.mark.parametrize("labels_only", [False, True])
def test_a_latin1_file_name_is_refused_by_name_never_dropped(tmp_path, fixtures, fmt, files, labels_only):
    ann_sfx, img_sfx = files
    good_ann = {b".pts": fixtures / FIX_PTS, b"_ldmks.txt": fixtures / "facesynthetics/000000_ldmks.txt"}.get(ann_sfx)
    img = fixtures / ("facesynthetics/000000.png" if fmt == "facesynthetics" else FIX_PNG)
    folder = os.fsencode(tmp_path)
    for stem in (b"caf\xe9", b"good"):  # Latin-1 'café': not UTF-8
        ann = folder + b"/" + stem + ann_sfx
        with open(ann, "wb") as f:
            f.write(good_ann.read_bytes() if good_ann else ljson({"LJSON": face68(fixtures)}).encode())
        shutil.copy(img, folder + b"/" + stem + img_sfx)
    recs, probs = split(get_format(fmt).read(tmp_path, labels_only=labels_only))
    assert [r.id for r in recs] == ["good"]
    assert len(probs) == 1 and probs[0].kind == "bad"
    assert probs[0].path == os.fsdecode(folder + b"/caf\xe9" + ann_sfx)  # the file itself, surrogate-escaped
    assert "file name is not UTF-8" in probs[0].reason and "caf\\xe9" in probs[0].reason


def test_a_latin1_images_folder_is_refused_by_name(tmp_path, fixtures):
    (tmp_path / "annot").mkdir()
    shutil.copy(fixtures / FIX_PTS, tmp_path / "annot/a.pts")
    imgs = os.fsencode(tmp_path) + b"/im\xe1genes"
    os.mkdir(imgs)
    shutil.copy(fixtures / FIX_PNG, imgs + b"/a.png")
    recs, probs = split(get_format("300w").read(tmp_path / "annot", images=os.fsdecode(imgs)))
    assert not recs and len(probs) == 1
    assert probs[0].path == os.fsdecode(imgs + b"/a.png") and "im\\xe1genes" in probs[0].reason


# ---------------------------------------------------------------- the real 300-VW sample

@pytest.mark.realdata
def test_real_300vw_pts_read_with_the_images_option_match_mmposes_coco(shared):
    root = shared / "mmpose_face_samples/300vw"
    coco = {Path(r.image).relative_to(root).as_posix(): r for r in split(get_format("coco").read(root / "anno_300vw.json"))[0]}
    for fmt in ("300w", "menpo"):
        recs, probs = split(get_format(fmt).read(root, images="../imgs"))
        assert not probs and len(recs) == 4
        for r in recs:
            rel = Path(r.image).relative_to(root).as_posix()
            assert rel == r.id.replace("annot", "imgs") + ".jpg" and r.width and r.height
            if rel in coco:  # mmpose copies the 1-based .pts values into COCO unchanged
                np.testing.assert_allclose(r.points, coco[rel].points - 1, atol=1e-9)


def test_labels_only_still_names_the_image_that_is_there(fixtures, monkeypatch):
    monkeypatch.setattr("gapkit.formats.pts.image_size", lambda *_: (_ for _ in ()).throw(AssertionError("opened")))
    faces, rep = load(DataSource(path=fixtures / "300w", format="300w", labels_only=True))
    assert not rep.problems and len(faces)
    assert all(Path(r.image).is_file() and r.width is None for r in faces)
