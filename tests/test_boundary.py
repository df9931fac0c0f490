"""The reading boundary: no exception in one record ends a run, the exit code tells a crash from
skipped records, labels read without images, and writers place real images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gapkit.formats.manifest as manifest_format
from gapkit.cli.main import app
from gapkit.errors import FormatError, Problem
from gapkit.faceset import DataSource, load
from gapkit.formats.common import guarded
from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.sim import SimConfig, generate

runner = CliRunner()


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """Six simulated faces in the 300-W layout and their manifest."""
    return generate(tmp_path_factory.mktemp("sim") / "faces", SimConfig(domain="real", n=6, size=64, seed=3), workers=1)


def _boom(_: object) -> None:
    raise ZeroDivisionError("a reader bug")


@pytest.mark.parametrize("build, kind, reason", [
    (lambda: 1, None, None),
    (lambda: (_ for _ in ()).throw(FormatError("f.pts", "bad number", 7)), "bad", "bad number"),
    (lambda: _boom(None), "internal", "internal error (ZeroDivisionError: a reader bug)"),
])
def test_the_guard_names_every_failure_and_never_raises(build, kind, reason):
    got = guarded("f.pts", 7, build)
    if kind is None:
        assert got == 1
    else:
        assert isinstance(got, Problem) and got.kind == kind and reason in got.reason and got.line == 7
        assert (got.detail is not None) == (kind == "internal")


def test_a_reader_that_dies_mid_stream_loses_that_source_not_the_run(sim, tmp_path, monkeypatch):
    real_read = manifest_format.read

    def dies_after_two(src, **kw):
        for i, item in enumerate(real_read(src, **kw)):
            if i == 2:
                raise RuntimeError("simulated reader bug")
            yield item

    other = tmp_path / "other.jsonl"
    write_manifest([r.model_copy(update={"id": f"b/{r.id}"}) for r in read_manifest(sim)], other)
    monkeypatch.setattr(manifest_format, "read", dies_after_two)
    faces, rep = load([DataSource(path=sim), DataSource(path=other)])
    # both sources read their first two faces; each loss is one internal problem naming its file
    assert len(faces) == 4 and rep.internal == 2
    assert {p.path for p in rep.problems} == {str(sim), str(other)}
    assert all("RuntimeError" in p.detail for p in rep.problems)


def test_an_internal_error_exits_3_with_the_traceback_in_the_report(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_format, "read", lambda src, **kw: (_ for _ in ()).throw(KeyError("x")))
    res = runner.invoke(app, ["convert", str(sim), str(tmp_path / "out.jsonl"), "--from", "manifest"])
    assert res.exit_code == 3, res.output
    report = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert report["internal_errors"] == 1 and "KeyError" in report["problems"][0]["detail"]


def test_skipped_bad_records_exit_1_and_a_missing_input_exits_2(sim, tmp_path):
    lines = sim.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:3], '{"id": "x", "points": "nope"}', *lines[3:]]) + "\n")
    # the copied lines name their images relative to the original folder
    for p in sim.parent.glob("*.jpg"):
        (tmp_path / p.name).symlink_to(p)
    res = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out.jsonl")])
    assert res.exit_code == 1 and "bad.jsonl:4" in res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "nothing"), str(tmp_path / "o2.jsonl")])
    assert res.exit_code == 2


def test_labels_convert_and_validate_without_their_images(sim, tmp_path):
    recs = list(read_manifest(sim))
    gone = tmp_path / "labels.jsonl"
    write_manifest([r.model_copy(update={"image": str(tmp_path / "missing" / Path(r.image).name)}) for r in recs],
                   gone)
    with_images = runner.invoke(app, ["validate", str(gone)])
    assert with_images.exit_code == 1  # every image is missing
    res = runner.invoke(app, ["validate", str(gone), "--no-images"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["convert", str(gone), str(tmp_path / "out.csv"), "--to", "csv", "--no-images"])
    assert res.exit_code == 0, res.output
    back = load(DataSource(path=tmp_path / "out.csv", labels_only=True))[0]
    np.testing.assert_array_equal(back.points, np.stack([r.points for r in recs]))


def test_a_symlinked_image_is_written_as_the_image_it_points_to(sim, tmp_path):
    recs = list(read_manifest(sim))
    links = tmp_path / "links"
    links.mkdir()
    for r in recs:  # relative links, as a dataset mirror makes them
        (links / Path(r.image).name).symlink_to(os.path.relpath(r.image, links))
    linked = tmp_path / "linked.jsonl"
    write_manifest([r.model_copy(update={"image": str(links / Path(r.image).name)}) for r in recs], linked)
    for mode, same_inode in (("link", True), ("copy", False)):
        out = tmp_path / f"out_{mode}"
        res = runner.invoke(app, ["convert", str(linked), str(out), "--to", "300w", "-W", f"images={mode}"])
        assert res.exit_code == 0, res.output
        written = sorted(p for p in out.rglob("*.jpg"))
        assert len(written) == len(recs) and not any(p.is_symlink() for p in written)
        src = Path(recs[0].image)
        assert (os.stat(written[0]).st_ino == os.stat(src).st_ino) == same_inode
        assert written[0].read_bytes() == src.read_bytes()


def test_an_unknown_image_mode_is_one_line_before_anything_is_written(sim, tmp_path):
    res = runner.invoke(app, ["convert", str(sim), str(tmp_path / "o"), "--to", "300w", "-W", "images=move"])
    assert res.exit_code == 2 and "images='move'" in res.output


def test_strict_stops_on_an_internal_error_with_exit_3(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_format, "read", lambda src, **kw: (_ for _ in ()).throw(KeyError("x")))
    res = runner.invoke(app, ["validate", str(sim), "--from", "manifest", "--strict"])
    assert res.exit_code == 3 and "stopped (--strict)" in res.output


def test_a_number_too_large_for_a_float_is_bad_input_not_a_bug(sim, tmp_path):
    lines = sim.read_text().splitlines()
    d = json.loads(lines[0])
    d["points"][0][0] = 10 ** 400  # valid JSON, no float holds it
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join([json.dumps(d), *lines[1:]]) + "\n")
    res = runner.invoke(app, ["validate", str(big), "--no-images"])
    assert res.exit_code == 1 and "big.jsonl:1" in res.output and "internal" not in res.output


def test_a_folder_named_by_digits_is_a_folder(tmp_path, fixtures):
    # -O values made of digits are parsed as numbers; a folder named 2024 must still be a path
    src = fixtures / "300w" / "lfpw" / "trainset"
    (tmp_path / "annot").mkdir()
    (tmp_path / "2024").mkdir()
    for p in src.glob("*.pts"):
        shutil.copy(p, tmp_path / "annot" / p.name)
        shutil.copy(p.with_suffix(".png"), tmp_path / "2024" / p.with_suffix(".png").name)
    res = runner.invoke(app, ["validate", str(tmp_path / "annot"), "--from", "300w", "-O", "images=../2024"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", str(tmp_path / "annot"), "--from", "300w", "-O",
                              f"images={tmp_path / '2024'}"])
    assert res.exit_code == 0, res.output
    faces, rep = load(DataSource(path=tmp_path / "annot", format="300w", options={"images": 2024}))
    assert not rep.internal  # relative to each annotation's folder: annot/2024 does not exist
