"""The two-stage detector: its training starts (stage 1's own points, or out-of-fold ones that
no fold model saw), the second stage kept only where it helps, the .gkm carrying both stages, predict
running both, ONNX as two graphs that agree with torch, and the CLI's settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gapkit.train.two_stage as two_stage_module
from gapkit.cli.main import app
from gapkit.errors import ConfigError, ModelError
from gapkit.faceset import DataSource
from gapkit.formats.manifest import read_manifest
from gapkit.predict import predict_to_manifest
from gapkit.refine import RefineConfig
from gapkit.sim import SimConfig, generate
from gapkit.train import FaceCrops, Source, predict, train
from gapkit.train.detector import Detector
from gapkit.train.fit import detector_config, fit_detector, two_stage_settings
from gapkit.train.onnx import OnnxDetector, export_onnx, refine_graph
from gapkit.train.trainer import TwoStage
from gapkit.train.two_stage import _folds, out_of_fold, starts_kind, training_starts

TINY = dict(steps=30, batch_size=8, size=32, width=8)
# a tiny CNN refiner; small_data=0: one 10% held-out check decides whether it is kept
REFINER = RefineConfig(method="cnn", steps=40, size=48, width=8, batch_size=8, small_data=0, amp=False)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("two_stage")
    generate(root / "real", SimConfig(domain="real", n=40, size=96, seed=5), workers=1)
    return root


@pytest.fixture(scope="module")
def model(sim) -> Detector:
    cfg = detector_config(**TINY, refine=TwoStage(refiner=REFINER))
    return fit_detector([DataSource(path=sim / "real/manifest.jsonl")], sim / "m.gkm", cfg)


def _preds(path: Path) -> dict[str, np.ndarray]:
    return {r.id: r.points for r in read_manifest(path) if not hasattr(r, "reason")}


def test_folds_partition_each_source_and_refuse_too_few_faces():
    crops = [type("C", (), {"__len__": lambda self, n=n: n})() for n in (9, 14)]
    folds = _folds([Source(c) for c in crops], 3, seed=0)
    for n, parts in zip((9, 14), folds, strict=True):
        assert sorted(np.concatenate(parts).tolist()) == list(range(n)) and len(parts) == 3
    with pytest.raises(ConfigError, match="at least 6 faces"):
        _folds([Source(crops[0]), Source(type("C", (), {"__len__": lambda self: 5})())], 3, seed=0)


def test_out_of_fold_points_come_from_models_that_never_saw_the_face(sim, monkeypatch):
    recs = [r for r in read_manifest(sim / "real/manifest.jsonl") if not hasattr(r, "reason")]
    crops = FaceCrops(recs, 32)
    seen = _spy_train(monkeypatch)
    cfg = detector_config(**TINY, refine=TwoStage(folds=2, refiner=REFINER))
    (oof,) = out_of_fold([Source(crops)], cfg)
    assert len(seen) == 2
    # every face was predicted, by the one fold model that did not train on it
    assert np.isfinite(oof).all() and oof.shape == (len(crops), 68, 2)
    assert all(len(s) < len(crops) for s in seen) and seen[0] | seen[1] == set(crops.ids)
    assert not seen[0] & seen[1]  # two folds: each model trains on the other's held-out faces


def test_two_stage_file_round_trip_and_predict_runs_both_stages(sim, model, tmp_path):
    assert model.refiner is not None and model.meta.refine["used"] and model.meta.refine["method"] == "cnn"
    back = Detector.load(sim / "m.gkm", scheme="ibug68")
    assert back.refiner is not None and np.array_equal(back.refiner.ref, model.refiner.ref)
    src = DataSource(path=sim / "real/manifest.jsonl")
    predict_to_manifest(back, src, tmp_path / "two.jsonl")
    one = Detector(back.net, back.meta, back.path)  # the same stage 1 without its second stage
    predict_to_manifest(one, src, tmp_path / "one.jsonl")
    a, b = _preds(tmp_path / "two.jsonl"), _preds(tmp_path / "one.jsonl")
    assert a.keys() == b.keys() and len(a) == 40
    moved = np.array([np.abs(a[k] - b[k]).max() for k in a])
    assert (moved > 1e-3).all()  # the second stage moved every face's points
    # and it did what its own refinement does on those stage-1 points and images
    img = __import__("cv2").imread(next(iter(read_manifest(sim / "real/manifest.jsonl"))).image)
    k0 = next(iter(b))
    assert np.allclose(back.refiner.on_images([img], b[k0][None])[0], a[k0], atol=1e-4)


def test_a_second_stage_that_does_not_help_is_not_kept(sim, tmp_path):
    weak = REFINER.model_copy(update={"steps": 1, "lr": 0.0})  # an untrained refiner returns its input
    cfg = detector_config(**TINY, refine=TwoStage(refiner=weak))
    det = fit_detector([DataSource(path=sim / "real/manifest.jsonl")], tmp_path / "w.gkm", cfg)
    assert det.refiner is None and det.meta.refine["used"] is False
    assert Detector.load(tmp_path / "w.gkm").refiner is None


def test_onnx_export_is_two_graphs_that_agree_with_torch(sim, model, tmp_path):
    pytest.importorskip("onnxruntime")
    out = export_onnx(Detector.load(sim / "m.gkm"), tmp_path / "m.onnx")
    assert refine_graph(out).is_file() and refine_graph(out).name == "m.refine.onnx"
    src = DataSource(path=sim / "real/manifest.jsonl")
    predict_to_manifest(Detector.load(sim / "m.gkm"), src, tmp_path / "torch.jsonl")
    predict_to_manifest(OnnxDetector(out), src, tmp_path / "onnx.jsonl")
    a, b = _preds(tmp_path / "torch.jsonl"), _preds(tmp_path / "onnx.jsonl")
    assert max(np.abs(a[k] - b[k]).max() for k in a) < 1e-2  # pixels of a 96 px image, float32 throughout
    refine_graph(out).unlink()
    with pytest.raises(ModelError, match="second graph m.refine.onnx is not beside it"):
        OnnxDetector(out)


def test_export_refuses_to_overwrite_either_graph(sim, model, tmp_path):
    pytest.importorskip("onnx")
    refine_graph(tmp_path / "m.onnx").write_text("mine")
    with pytest.raises(Exception, match="exists"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and refine_graph(tmp_path / "m.onnx").read_text() == "mine"


def test_two_stage_settings_split_fold_and_refiner_keys():
    s = two_stage_settings({"folds": 3, "starts": "out_of_fold", "method": "cascade", "steps": 10})
    assert s.folds == 3 and s.starts == "out_of_fold" and s.refiner.method == "cascade" and s.refiner.steps == 10
    # the second stage's own refiner defaults apply beneath the options, as in TwoStage()
    assert two_stage_settings({}).refiner == TwoStage().refiner and TwoStage().refiner.jitter == 1.5
    assert two_stage_settings({"jitter": 0.5}).refiner.jitter == 0.5


def _spy_train(monkeypatch) -> list[set[str]]:
    """The faces each model trained inside gapkit.train.two_stage saw (the real trainer runs)."""
    seen: list[set[str]] = []
    real_train = two_stage_module.train

    def spy(sources, cfg, **kw):
        seen.append({i for s in sources for i in s.crops.ids})
        return real_train(sources, cfg, **kw)

    monkeypatch.setattr(two_stage_module, "train", spy)
    return seen


@pytest.mark.parametrize("starts, n, kind", [
    ("auto", 999, "out_of_fold"), ("auto", 1000, "own"), ("own", 10, "own"), ("out_of_fold", 5000, "out_of_fold"),
])
def test_auto_starts_from_own_points_on_many_faces_only(starts, n, kind):
    assert starts_kind(TwoStage(starts=starts), n) == kind


@pytest.mark.parametrize("starts, models", [("own", 0), ("out_of_fold", 2)])
def test_training_starts_are_stage_1s_own_points_or_out_of_fold_ones(sim, monkeypatch, starts, models):
    recs = [r for r in read_manifest(sim / "real/manifest.jsonl") if not hasattr(r, "reason")]
    crops = FaceCrops(recs, 32)
    cfg = detector_config(**TINY, refine=TwoStage(starts=starts, folds=2, refiner=REFINER))
    stage1 = train([Source(crops)], cfg)
    seen = _spy_train(monkeypatch)
    pts = training_starts([Source(crops)], cfg, stage1)
    assert len(seen) == models and pts.shape == (len(crops), 68, 2) and np.isfinite(pts).all()
    own = predict(stage1, crops, flip=cfg.flip_test)
    assert np.allclose(pts, own) == (starts == "own")  # fold models predict otherwise than stage 1
    if starts == "own":
        with pytest.raises(ConfigError, match="needs the trained stage 1"):
            training_starts([Source(crops)], cfg)


@pytest.mark.parametrize("args, message", [
    (["--refine", "steps=5"], "--refine sets the second stage"),
    (["--two-stage", "--refine", "colour=blue"], "colour"),
])
def test_cli_two_stage_options_are_checked(sim, tmp_path, args, message):
    res = CliRunner().invoke(app, ["train", str(sim / "real/manifest.jsonl"), "-o", str(tmp_path / "x.gkm"),
                                   "--steps", "2", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and not (tmp_path / "x.gkm").exists()


def test_cli_train_two_stage_writes_a_model_that_says_so(sim, tmp_path):
    res = CliRunner().invoke(app, ["train", str(sim / "real/manifest.jsonl"), "-o", str(tmp_path / "t.gkm"),
                                   "--steps", "20", "--size", "32", "--two-stage", "--refine", "method=cnn",
                                   "--refine", "steps=20", "--refine", "size=48", "--refine", "small_data=0"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    # 40 faces: below own_from, so "auto" starts from out-of-fold points
    assert "second stage" in said and "from out-of-fold stage-1 points" in said
    meta = Detector.load(tmp_path / "t.gkm").meta
    assert meta.train["refine"]["refiner"]["steps"] == 20 and "used" in meta.refine
    json.dumps(meta.refine)  # the report is plain JSON
