"""The command line on real files: conversion, reports, broken inputs, overwrite rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gapkit.cli.main import app as installed_app

runner = CliRunner()


def run(*args):
    return runner.invoke(installed_app, [str(a) for a in args])


def test_convert_to_manifest_with_scheme_mapping(tmp_path, fixtures):
    out = tmp_path / "fs.jsonl"
    res = run("convert", fixtures / "facesynthetics", out, "--scheme", "ibug68")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2 and {x["scheme"] for x in lines} == {"ibug68"}
    assert lines[0]["attributes"]["mapped_from"] == "facesynthetics70"
    report = json.loads((tmp_path / "fs.jsonl.report.json").read_text())
    assert report["written"] == 2 and report["skipped"] == 0


def test_never_overwrites_without_the_flag(tmp_path, fixtures):
    out = tmp_path / "m.jsonl"
    out.write_text("mine\n")
    res = run("convert", fixtures / "300w", out)
    assert res.exit_code == 2 and "--overwrite" in res.output
    assert out.read_text() == "mine\n"
    res = run("convert", fixtures / "300w", out, "--overwrite")
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 5


def test_split_filter_and_pts_output(tmp_path, fixtures):
    res = run("convert", fixtures / "300w", tmp_path / "pts", "--to", "300w", "--split", "train")
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path / "pts").as_posix() for p in (tmp_path / "pts").rglob("*.pts")) == [
        "afw/image_0005.pts", "helen/trainset/image_0002.pts", "lfpw/trainset/image_0001.pts"]


@pytest.fixture
def broken(tmp_path, fixtures) -> Path:
    """A 300-W folder seeded with one bad file of each kind next to good ones."""
    root = tmp_path / "broken"
    shutil.copytree(fixtures / "300w", root)
    good = (root / "lfpw/trainset/image_0001.pts").read_text()
    img = root / "lfpw/trainset/image_0001.png"
    lines = good.splitlines()
    cases = {
        "truncated": "\n".join(lines[:40]),
        "sixtyseven": "\n".join(lines[:3] + lines[3:70] + ["}"]),
        "nantext": "\n".join(lines[:10] + ["nan 12.5"] + lines[11:]),
        "noimage": good,
        "notimage": good,
    }
    for name, text in cases.items():
        (root / "lfpw/trainset" / f"{name}.pts").write_text(text)
        if name not in ("noimage", "notimage"):
            shutil.copy(img, root / "lfpw/trainset" / f"{name}.png")
    (root / "lfpw/trainset/notimage.png").write_text("this is not a png")
    return root


EXPECTED = [("truncated.pts", "truncated"), ("sixtyseven.pts", "n_points says 68, found 67 points"),
            ("nantext.pts", "non-finite coordinate"), ("noimage.pts", "no image beside"),
            ("notimage.png", "not a readable image")]


def test_validate_reports_every_broken_file_by_name(broken):
    res = run("validate", broken, "--from", "300w", "--json", broken.parent / "v.json")
    assert res.exit_code == 1
    report = json.loads((broken.parent / "v.json").read_text())
    assert report["stats"]["records"] == 5
    problems = {Path(p["path"]).name: p for p in report["problems"]}
    for name, reason in EXPECTED:
        assert name in problems, (name, problems.keys())
        assert reason in problems[name]["reason"]
        assert name in res.output
    assert problems["nantext.pts"]["line"] == 11 and problems["truncated.pts"]["line"] == 41


def test_convert_skips_bad_files_and_keeps_the_good_ones(broken, tmp_path):
    out = tmp_path / "m.jsonl"
    res = run("convert", broken, out, "--from", "300w")
    assert res.exit_code == 1
    assert len(out.read_text().splitlines()) == 5
    report = json.loads((tmp_path / "m.jsonl.report.json").read_text())
    assert report["skipped"] == 5 and report["written"] == 5


def test_strict_stops_at_the_first_problem(broken, tmp_path):
    out = tmp_path / "m.jsonl"
    res = run("convert", broken, out, "--from", "300w", "--strict")
    assert res.exit_code == 1 and "stopped (--strict)" in res.output
    assert not out.exists()  # atomic: nothing half-written


def test_unreadable_json_is_reported(tmp_path, fixtures):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    res = run("validate", bad, "--from", "coco")
    assert res.exit_code == 1 and "bad.json" in res.output and "not valid JSON" in res.output
    dg = tmp_path / "dg"
    shutil.copytree(fixtures / "datagen", dg)
    (dg / "datapoint_00002/camera/key_points/face_standard_key_points.json").write_text("{oops")
    res = run("validate", dg, "--from", "datagen")
    assert res.exit_code == 1 and "face_standard_key_points.json" in res.output and "not valid JSON" in res.output


def test_configuration_errors_are_one_line(tmp_path, fixtures):
    res = run("convert", fixtures / "300w", tmp_path / "x.jsonl", "--scheme", "wflw98")
    assert res.exit_code == 2 and "no deterministic mapping from ibug68 to wflw98" in res.output
    res = run("convert", fixtures / "300w", tmp_path / "y.jsonl", "--to", "wflw")
    assert res.exit_code == 2 and "read-only" in res.output


def test_schemes_and_formats_list():
    res = run("schemes")
    assert res.exit_code == 0 and "facesynthetics70_to_ibug68" in res.output
    assert run("schemes", "wflw98").exit_code == 0
    assert "dlib" in run("formats").output
