"""Nothing lost, nothing silent: empty inputs, split names, options, moved trees, and
--overwrite that replaces only what the command wrote (a sentinel file must survive)."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.cli.main import app
from gapkit.faceset import load
from gapkit.formats import FORMATS

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args, code, says", [
    (["convert", "{tmp}/no-such-folder", "{tmp}/o.jsonl", "--from", "300w"], 2, "no such file or folder"),
    (["validate", "{tmp}/no-such-folder"], 2, "no such file or folder"),
    (["convert", "{tmp}", "{tmp}/o.jsonl", "--from", "300w"], 2, "holds nothing 300w reads"),
    (["convert", "{fx}/300w", "{tmp}/o.jsonl", "--split", "tarin"], 2, "present: challenging (1), common (1), train (3)"),
    (["validate", "{fx}/300w", "-O", "keypoint=dense"], 2, "valid: subset"),
    (["convert", "{fx}/datagen", "{tmp}/o.jsonl", "-O", "keypoint=dense"], 2, "valid: keypoints"),
    (["adapt", "fit", "--source", "{fx}/datagen", "--target", "{fx}/300w", "-o", "{tmp}/a.gka", "-S", "bogus=1"], 2,
     "unknown datagen reader option bogus"),
    (["app", "--input", "{fx}/300w", "--input", "{fx}/facesynthetics", "--domain", "a", "--domain", "b",
      "--domain", "c", "--no-launch"], 2, "3 --domain values for 2 inputs"),
    (["app", "--input", "{tmp}/gone.jsonl", "--no-launch"], 2, "no such file or folder"),
])
def test_refused_before_anything_is_written(tmp_path, fixtures, args, code, says):
    res = run(*[a.format(tmp=tmp_path, fx=fixtures) for a in args])
    assert res.exit_code == code, res.output
    assert says in " ".join(res.output.split()), res.output
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "a.gka").exists()


def test_every_record_skipped_exits_1_and_writes_nothing(tmp_path, fixtures):
    root = tmp_path / "bad"
    shutil.copytree(fixtures / "300w", root)
    for p in root.rglob("*.pts"):
        p.write_text("version: 1\nn_points: 68\n{\n}\n")
    res = run("convert", root, tmp_path / "o.jsonl")
    assert res.exit_code == 1 and "no good records" in res.output
    assert not (tmp_path / "o.jsonl").exists()
    assert json.loads((tmp_path / "o.jsonl.report.json").read_text())["skipped"] == 5


def test_truncated_png_is_caught_by_convert_and_validate(tmp_path, fixtures):
    shutil.copytree(fixtures / "300w", tmp_path / "d")
    img = tmp_path / "d/lfpw/trainset/image_0001.png"
    img.write_bytes(img.read_bytes()[:3000])
    assert run("convert", tmp_path / "d", tmp_path / "d.jsonl", "--from", "300w").exit_code == 1
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "image_0001" not in "".join(lines)
    # through a manifest, which carries sizes and so never opens the image when read
    from gapkit.formats.manifest import write_manifest

    good = tmp_path / "all.jsonl"
    recs = [r.model_copy(update={"image": str(img)}) if r.image.endswith("image_0001.png") else r
            for r in load(fixtures / "300w")[0]]
    write_manifest(recs, good)
    for args in (["validate", good], ["convert", good, tmp_path / "again.jsonl"]):
        res = run(*args)
        assert res.exit_code == 1 and "truncated" in res.output, res.output


def test_a_moved_tree_with_its_manifest_still_reads(tmp_path, fixtures):
    shutil.copytree(fixtures / "300w", tmp_path / "a/300w")
    assert run("convert", tmp_path / "a/300w", tmp_path / "a/faces.jsonl").exit_code == 0
    assert '"image":"300w/' in (tmp_path / "a/faces.jsonl").read_text()  # relative to the manifest
    shutil.move(tmp_path / "a", tmp_path / "b")
    faces, rep = load(tmp_path / "b/faces.jsonl", check_images=True)
    assert len(faces) == 5 and not rep.problems


def test_formats_declare_the_options_their_readers_take():
    for name, mod in FORMATS.items():
        params = set(inspect.signature(mod.read).parameters) - {"src", "chunk", "labels_only"}
        assert set(mod.INFO.read_options) == params, name
        if hasattr(mod, "write"):
            params = set(inspect.signature(mod.write).parameters) - {"records", "out", "overwrite"}
            assert set(mod.INFO.write_options) == params, name


# ---- --overwrite keeps what the command did not write ----------------------------------------

def sentinel(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("mine")
    return folder / "notes.txt"


def test_convert_to_a_folder_format(tmp_path, fixtures):
    keep = sentinel(tmp_path / "out")
    assert run("convert", fixtures / "300w", tmp_path / "out", "--to", "300w").exit_code == 2  # not empty
    res = run("convert", fixtures / "300w", tmp_path / "out", "--to", "300w", "--overwrite")
    assert res.exit_code == 0 and keep.read_text() == "mine"
    assert len(list((tmp_path / "out").rglob("*.pts"))) == 5


def test_sim_overwrite_removes_only_its_own_files(tmp_path):
    out = tmp_path / "sim"
    assert run("sim", out, "--n", "3", "--size", "32", "--workers", "1").exit_code == 0
    keep = sentinel(out)
    assert run("sim", out, "--n", "2", "--size", "32", "--workers", "1").exit_code == 2
    assert run("sim", out, "--n", "2", "--size", "32", "--workers", "1", "--overwrite").exit_code == 0
    assert keep.read_text() == "mine"
    assert not (out / "000002.png").exists()  # the first run's third face, listed in its SIM.json
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000000_ldmks.txt", "000001.png",
                                                     "000001_ldmks.txt", "SIM.json", "manifest.jsonl", "notes.txt"]
    assert len(load(out / "manifest.jsonl", check_images=True)[0]) == 2


def test_adapt_gap_report_keep_other_files(tmp_path):
    from gapkit.sim import SimConfig, generate

    syn = generate(tmp_path / "syn", SimConfig(n=40, size=64, seed=3))
    real = generate(tmp_path / "real", SimConfig(domain="real", n=40, size=64, seed=3))
    pairs = tmp_path / "pairs.jsonl"
    faces = load(syn)[0]
    human = [r.model_copy(update={"scheme": "ibug68", "points": np.asarray(r.attributes["human68"]),
                               "visible": None}) for r in faces]
    from gapkit.formats.manifest import write_manifest
    write_manifest(human, pairs)
    keep = sentinel(tmp_path / "models")
    args = ["adapt", "fit", "--source", syn, "--target", pairs, "-o", tmp_path / "models/a.gka", "--head", "linear"]
    assert run(*args).exit_code == 0
    assert run(*args, "--overwrite").exit_code == 0 and keep.read_text() == "mine"
    res = run("adapt", "apply", tmp_path / "models/a.gka", syn, tmp_path / "models/out.jsonl")
    assert res.exit_code == 0 and keep.read_text() == "mine"
    gap = tmp_path / "gap"
    keep = sentinel(gap)
    base = ["gap", "report", "--a", syn, "--b", real, "-o", gap, "--no-visual"]
    assert run(*base).exit_code in (0, 1)
    assert run(*base).exit_code == 2  # a report is there
    assert run(*base, "--overwrite").exit_code in (0, 1) and keep.read_text() == "mine"


def test_benchmark_fresh_discards_only_its_cells_and_models(tmp_path):
    from gapkit.bench import Runner

    mine = [sentinel(tmp_path / "cells"), sentinel(tmp_path / "models"), tmp_path / "models/my_net.pt"]
    mine[2].write_bytes(b"x")
    ours = [tmp_path / "cells/real_only_n10_s0.json", tmp_path / "cells/mix_a0.5_n10_s1.json",
            tmp_path / "models/finetune_n10_s0.gkm", tmp_path / "models/synthetic_mapped_s0.ckpt"]
    for p in ours:
        p.write_text("{}")
    assert Runner.discard(tmp_path) == 4
    assert all(p.exists() for p in mine) and not any(p.exists() for p in ours)


def test_listings_show_whole_descriptions_and_plain_text(monkeypatch):
    from gapkit.cli import ui
    from gapkit.schemes import get_scheme, scheme_names

    monkeypatch.setattr(ui.console, "_width", 300)  # wide enough that no word is folded

    out = " ".join(run("schemes").output.replace("│", " ").split())
    for name in scheme_names():  # every word of every description, none cut off
        words = get_scheme(name).description.split()
        assert all(w in out for w in words), name
    out = " ".join(run("formats").output.replace("│", " ").split())
    for mod in FORMATS.values():
        assert all(w in out for w in mod.INFO.about.split()), mod.INFO.name
    assert "[bold]" not in out and "``" not in out


def test_sim_pose_help_says_what_the_bounds_do():
    out = " ".join(run("sim", "--help").output.replace("│", " ").split())
    assert "±0.7×this" in out and "±0.5×this" in out


def test_adapt_fit_takes_options_per_side(shared, tmp_path):
    dg = shared / "datagen_dgutils"
    res = run("adapt", "fit", "--source", dg, "--source-from", "datagen", "-S", "keypoints=dense",
              "--target", dg, "--target-from", "datagen", "-T", "keypoints=standard",
              "-o", tmp_path / "a.gka", "--head", "linear")
    assert res.exit_code == 0, res.output
    assert "mediapipe468 -> datagen68" in res.output and (tmp_path / "a.gka").is_file()


def test_a_manifest_of_mixed_schemes_keeps_what_maps(tmp_path, fixtures):
    from gapkit.formats.manifest import write_manifest

    recs = [*load(fixtures / "300w")[0].records[:2], *load(fixtures / "facesynthetics")[0].records[:1]]
    five = recs[0].model_copy(update={"id": "five", "scheme": "dlib5", "points": recs[0].points[:5], "visible": None})
    write_manifest([*recs, five], tmp_path / "mixed.jsonl")
    res = run("convert", tmp_path / "mixed.jsonl", tmp_path / "out.jsonl", "--scheme", "ibug68")
    assert res.exit_code == 1 and "'five'" in res.output and "dlib5" in res.output
    out = load(tmp_path / "out.jsonl")[0]
    assert len(out) == 3 and out.scheme == "ibug68" and out.points.shape == (3, 68, 2)


def test_a_missing_adapter_file_is_a_named_error(tmp_path, fixtures):
    res = run("adapt", "apply", tmp_path / "gone.gka", fixtures / "300w", tmp_path / "o.jsonl")
    assert res.exit_code == 2 and "gone.gka: no such adapter file" in " ".join(res.output.split())
