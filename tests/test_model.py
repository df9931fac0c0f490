"""Model files, `gapkit train / predict / export`: the file round trip and what loading refuses,
prediction on datasets and image folders under both box protocols, bad inputs, ONNX agreement,
weights-only checkpoints, resume, memory that does not grow with the input, and the ResNet
trunks against torchvision's architecture."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from gapkit.cli.main import app
from gapkit.errors import ConfigError, InputError, ModelError
from gapkit.faceset import DataSource
from gapkit.formats.manifest import read_manifest, write_manifest
from gapkit.metrics import nme
from gapkit.predict import predict_to_manifest
from gapkit.schemes import get_scheme
from gapkit.sim import SimConfig, generate
from gapkit.train.detector import Detector, crop_points, ids_digest
from gapkit.train.fit import detector_config, fit_detector
from gapkit.train.onnx import OnnxDetector, export_onnx

TINY = dict(steps=30, batch_size=8, size=32, width=8)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    generate(root / "real", SimConfig(domain="real", n=60, size=128, seed=3), workers=1)
    return root


@pytest.fixture(scope="module")
def model(sim) -> Detector:
    return fit_detector([DataSource(path=sim / "real/manifest.jsonl")], sim / "m.gkm", detector_config(**TINY))


def records(path: Path) -> list:
    return [r for r in read_manifest(path) if not hasattr(r, "reason")]


def test_model_file_round_trip_keeps_weights_and_metadata(sim, model):
    back = Detector.load(sim / "m.gkm", scheme="ibug68")
    m = back.meta
    ids = [r.id for r in records(sim / "real/manifest.jsonl")]
    assert (m.scheme, m.num_points, m.size, m.margin, m.strategy, m.seed) == ("ibug68", 68, 32, 1.3, "real_only", 0)
    assert m.train_set.n == 60 and m.train_set.digest == ids_digest(ids)
    assert m.crop_policy and m.gapkit_version and m.train["steps"] == 30 and m.calibration is not None
    crops = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(crop_points(back, crops), crop_points(model, crops))


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    edit(parts)
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in parts.items():
            z.writestr(n, data)
    return dst


def _pickled_weights(parts: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, evil=np.array([{"a": 1}], dtype=object))
    parts["weights.npz"] = buf.getvalue()
    meta = json.loads(parts["meta.json"])
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(parts["weights.npz"]).hexdigest()
    parts["meta.json"] = json.dumps(meta).encode()


def _flip_byte(parts: dict) -> None:
    w = bytearray(parts["weights.npz"])
    w[len(w) // 2] ^= 0xFF
    parts["weights.npz"] = bytes(w)


BAD_FILES = [
    ("truncated", lambda src, dst: dst.write_bytes(src.read_bytes()[:5000]), "not a readable gapkit model file"),
    ("not a zip", lambda src, dst: dst.write_bytes(b"\x89PNG not a model"), "not a readable gapkit model file"),
    ("no meta", lambda src, dst: _rewrite(src, dst, lambda p: p.pop("meta.json")), "not a readable gapkit model"),
    ("other kind", lambda src, dst: _rewrite(src, dst, lambda p: p.update(
        {"meta.json": json.dumps({"kind": "something"}).encode()})), "not a gapkit model file"),
    ("flipped weight byte", lambda src, dst: _rewrite(src, dst, _flip_byte), "do not match their digest"),
    ("pickled weights", lambda src, dst: _rewrite(src, dst, _pickled_weights), "do not fit the model"),
]


@pytest.mark.parametrize("case, make, message", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_corrupt_or_foreign_model_file_is_refused(sim, model, tmp_path, case, make, message):
    bad = tmp_path / "bad.gkm"
    make(sim / "m.gkm", bad)
    with pytest.raises(ModelError, match=message) as exc:
        Detector.load(bad)
    assert str(bad) in str(exc.value)


def test_a_scheme_mismatch_is_refused(sim, model):
    with pytest.raises(ModelError, match="predicts scheme 'ibug68', but the data is 'wflw98'"):
        Detector.load(sim / "m.gkm", scheme="wflw98")
    with pytest.raises(InputError, match="no such model file"):
        Detector.load(sim / "nothing.gkm")


def test_predict_with_label_boxes_writes_the_models_scheme_and_scores_it(sim, model, tmp_path):
    out = tmp_path / "p.jsonl"
    rep = predict_to_manifest(model, DataSource(path=sim / "real/manifest.jsonl"), out)
    gt, pred = records(sim / "real/manifest.jsonl"), records(out)
    assert [p.id for p in pred] == [g.id for g in gt] and not rep.problems
    assert {p.scheme for p in pred} == {"ibug68"} and {p.source for p in pred} == {model.name}
    want = nme(np.stack([p.points for p in pred]), np.stack([g.points for g in gt]), get_scheme("ibug68"))
    assert np.allclose([p.attributes["nme"] for p in pred], want)
    assert rep.scores()["nme_pct"] == pytest.approx(100 * want.mean())
    with pytest.raises(Exception, match="exists"):
        predict_to_manifest(model, DataSource(path=sim / "real/manifest.jsonl"), out)


def test_detector_boxes_give_one_record_per_face_found_and_report_the_missed(sim, model, tmp_path):
    rep = predict_to_manifest(model, DataSource(path=sim / "real/manifest.jsonl"), tmp_path / "d.jsonl",
                              boxes="detect")
    found = records(tmp_path / "d.jsonl")
    labelled = [p for p in found if "#" not in p.id]
    sc = rep.scores()
    assert len(labelled) == sc["found"] and sc["found"] + sc["missed"] == 60 and sc["missed"] > 0
    assert sum("found no face" in p.reason for p in rep.problems) == sc["missed"]
    assert sc["fr_all"] == pytest.approx((sc["fr"] * sc["found"] + sc["missed"]) / 60)
    assert all(p.attributes["boxes"] == "detect" and len(p.attributes["detection"]) == 4 for p in found)


def test_predict_builds_the_face_detector_the_model_file_names(sim, model, tmp_path):
    from gapkit.detect import DETECTORS, HaarDetector, register_detector

    calls = []

    @register_detector
    class Spy(HaarDetector):  # Haar's boxes, under another name
        kind = "spy-test"

        def __init__(self):
            super().__init__()
            self.name = self.kind

        def __call__(self, img):
            calls.append(img.shape)
            return super().__call__(img)

    src = DataSource(path=sim / "real/manifest.jsonl")
    try:
        spied = Detector(model.net, model.meta.model_copy(update={"detector": "spy-test"}), model.path)
        predict_to_manifest(spied, src, tmp_path / "s.jsonl", boxes="detect")
    finally:
        DETECTORS.pop("spy-test")
    assert len(calls) == 60
    named_haar = Detector(model.net, model.meta.model_copy(update={"detector": HaarDetector().name}), model.path)
    predict_to_manifest(named_haar, src, tmp_path / "h.jsonl", boxes="detect")  # the file names Haar
    spy, haar = records(tmp_path / "s.jsonl"), records(tmp_path / "h.jsonl")
    assert {r.attributes["detector"] for r in spy} == {"spy-test"}
    assert {r.attributes["detector"] for r in haar} == {HaarDetector().name}
    assert model.meta.detector == "dlib-hog:0"  # what gapkit train calibrates by default
    assert np.array_equal(np.stack([r.points for r in spy]), np.stack([r.points for r in haar]))
    unknown = Detector(model.net, model.meta.model_copy(update={"detector": "yunet"}), model.path)
    with pytest.raises(ModelError, match="belongs to the face detector 'yunet', which this gapkit does not have"):
        predict_to_manifest(unknown, src, tmp_path / "u.jsonl", boxes="detect")
    assert not (tmp_path / "u.jsonl").exists()


def test_backbones_are_one_registry_checked_in_one_place():
    import torch

    from gapkit.train import TrainConfig
    from gapkit.train.backbones import BACKBONES, register_backbone
    from gapkit.train.model import BUILDERS, LandmarkNet

    assert list(BACKBONES) == ["compact", "resnet18", "resnet34", "resnet50"]
    assert all(b.builder in BUILDERS for b in BACKBONES.values())
    for name in BACKBONES:
        assert TrainConfig(backbone=name).backbone == name
    with pytest.raises(ConfigError, match="backbone: unknown backbone 'vgg'; use one of compact, resnet18"):
        TrainConfig(backbone="vgg")
    with pytest.raises(ConfigError, match="unknown backbone 'vgg'; use one of compact, resnet18"):
        LandmarkNet(68, backbone="vgg")
    try:  # a new one is its registration: the settings and the net take it at once
        register_backbone("compact-test", "compact")
        assert TrainConfig(backbone="compact-test").backbone == "compact-test"
        assert LandmarkNet(68, 4, "compact-test").features(torch.zeros(1, 3, 32, 32)).shape == (1, 16)
    finally:
        BACKBONES.pop("compact-test", None)


def _basic(cin: int, c: int, stride: int) -> int:
    """Parameters of torchvision's BasicBlock: two 3x3 convs, two BNs (weight + bias), and a 1x1
    projection with its BN where the shape changes."""
    return 9 * cin * c + 2 * c + 9 * c * c + 2 * c + (cin * c + 2 * c if stride != 1 or cin != c else 0)


def _bottleneck(cin: int, c: int, stride: int) -> int:
    """Parameters of torchvision's Bottleneck: 1x1 to c, 3x3, 1x1 to 4c, three BNs, and a 1x1
    projection to 4c with its BN where the shape changes."""
    return (cin * c + 2 * c + 9 * c * c + 2 * c + c * 4 * c + 8 * c
            + (cin * 4 * c + 8 * c if stride != 1 or cin != 4 * c else 0))


def _resnet_params(block, expansion: int, layers: list[int], classes: int = 0) -> int:
    """conv1 (7x7, 3 -> 64) + bn1 + the given layers (64, 128, 256, 512 wide) [+ fc]."""
    total, cin = 3 * 64 * 49 + 2 * 64, 64
    for i, n in enumerate(layers):
        c = 64 * 2 ** i
        total += block(cin, c, 1 if i == 0 else 2) + (n - 1) * block(c * expansion, c, 1)
        cin = c * expansion
    return total + (cin * classes + classes if classes else 0)


def _torchvision_keys(expansion: int, layers: list[int]) -> set[str]:
    """The state_dict keys of torchvision's ResNet for conv1, bn1 and the given layers."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = {"conv1.weight"} | {f"bn1.{b}" for b in bn}
    for i, n in enumerate(layers):
        for j in range(n):
            at = f"layer{i + 1}.{j}"
            for k in range(1, 4 if expansion == 4 else 3):
                keys |= {f"{at}.conv{k}.weight"} | {f"{at}.bn{k}.{b}" for b in bn}
            if j == 0 and (i > 0 or expansion > 1):  # the projection where the shape changes
                keys |= {f"{at}.downsample.0.weight"} | {f"{at}.downsample.1.{b}" for b in bn}
    return keys


def _torchvision_names(net) -> set[str]:
    """The trunk's state_dict keys, renamed stem.0/stem.1 -> conv1/bn1 and s4/s8/s16 -> layer1..3."""
    rename = {"stem.0": "conv1", "stem.1": "bn1", "s4": "layer1", "s8": "layer2", "s16": "layer3"}
    out = set()
    for k in net.state_dict():
        head = next((h for h in rename if k.startswith(h + ".")), None)
        if head:
            out.add(rename[head] + k[len(head):])
    return out


# torchvision's documented totals (ResNet*_Weights.IMAGENET1K_V1.meta["num_params"]), which the
# same arithmetic over all four layers and fc must reach: it anchors the formulas to torchvision
RESNET = {"resnet18": (_basic, 1, [2, 2, 2, 2], 11_689_512), "resnet34": (_basic, 1, [3, 4, 6, 3], 21_797_672),
          "resnet50": (_bottleneck, 4, [3, 4, 6, 3], 25_557_032)}


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_trunks_are_torchvisions_layers_up_to_layer3(name):
    import torch

    from gapkit.train.backbones import BACKBONES
    from gapkit.train.model import LandmarkNet

    block, e, layers, documented = RESNET[name]
    assert _resnet_params(block, e, layers, classes=1000) == documented
    net = LandmarkNet(68, backbone=name).eval()
    trunk = (net.stem, net.s4, net.s8, net.s16)
    assert sum(p.numel() for m in trunk for p in m.parameters()) == _resnet_params(block, e, layers[:3])
    assert _torchvision_names(net) == _torchvision_keys(e, layers[:3])
    with torch.no_grad():
        f4 = net.s4(net.stem(torch.zeros(1, 3, 64, 64)))
        f8 = net.s8(f4)
        f16 = net.s16(f8)
    c4, c8, c16 = BACKBONES[name].channels
    assert (f4.shape, f8.shape, f16.shape) == ((1, c4, 16, 16), (1, c8, 8, 8), (1, c16, 4, 4))


def test_bad_inputs_are_reported_and_skipped_and_the_rest_predicted(sim, model, tmp_path):
    # a folder of images: one the detector finds, noise, a text file and a truncated JPEG
    rep = predict_to_manifest(model, DataSource(path=sim / "real/manifest.jsonl"), tmp_path / "d.jsonl",
                              boxes="detect")
    face = next(p for p in records(tmp_path / "d.jsonl") if "#" not in p.id)
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(face.image, folder / "face.jpg")
    cv2.imwrite(str(folder / "noise.png"), np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(Path(face.image).read_bytes()[:200])
    rep = predict_to_manifest(model, DataSource(path=folder), tmp_path / "f.jsonl", boxes="detect")
    why = {Path(p.path).name: p.reason for p in rep.problems}
    assert why == {"noise.png": "the face detector found no face", "notes.txt": "not an image file",
                   "broken.jpg": "unreadable image"}
    assert [p.id for p in records(tmp_path / "f.jsonl")] == ["face.jpg#0"] and rep.scores() is None
    with pytest.raises(ConfigError, match="no label box"):
        predict_to_manifest(model, DataSource(path=folder), tmp_path / "g.jsonl", boxes="labels")
    # a manifest: a missing image and a record in a scheme the model does not predict
    good = records(sim / "real/manifest.jsonl")[:3]
    other = good[2].model_copy(update={"id": "cofw", "scheme": "cofw29", "points": good[2].points[:29],
                                       "visible": None})
    gone = good[1].model_copy(update={"id": "gone", "image": str(tmp_path / "gone.jpg")})
    write_manifest([good[0], gone, other], tmp_path / "mixed.jsonl")
    rep = predict_to_manifest(model, DataSource(path=tmp_path / "mixed.jsonl"), tmp_path / "m.jsonl")
    reasons = sorted(p.reason for p in rep.problems)
    assert [p.id for p in records(tmp_path / "m.jsonl")] == [good[0].id] and len(reasons) == 2
    assert "record 'cofw' is in scheme cofw29; the model predicts ibug68" in reasons[0]
    assert reasons[1] == "record 'gone': missing or unreadable image"


def test_onnx_export_agrees_with_the_torch_model(sim, model, tmp_path):
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    onnx_model = OnnxDetector(onnx_path, scheme="ibug68")
    assert onnx_model.meta == model.meta
    src = DataSource(path=sim / "real/manifest.jsonl")
    predict_to_manifest(model, src, tmp_path / "t.jsonl")
    predict_to_manifest(onnx_model, src, tmp_path / "o.jsonl")
    a, b = (np.stack([r.points for r in records(tmp_path / f)]) for f in ("t.jsonl", "o.jsonl"))
    assert np.abs(a - b).max() < 1e-3  # image pixels
    with pytest.raises(ModelError, match="predicts scheme 'ibug68'"):
        OnnxDetector(onnx_path, scheme="wflw98")
    (tmp_path / "bad.onnx").write_bytes(onnx_path.read_bytes()[:300])
    with pytest.raises(ModelError, match="bad.onnx: not a gapkit ONNX model"):
        OnnxDetector(tmp_path / "bad.onnx")


class Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoints_load_weights_only_and_only_into_their_own_run(sim, tmp_path):
    import torch

    from gapkit.train import FaceCrops, Source, train

    crops = FaceCrops(records(sim / "real/manifest.jsonl")[:16], 32)
    cfg = detector_config(**TINY | {"steps": 4})
    evil = tmp_path / "evil.ckpt"
    torch.save({"model": {}, "payload": Evil()}, evil)
    with pytest.raises(ModelError, match="evil.ckpt: not a readable checkpoint"):
        train([Source(crops)], cfg, checkpoint=evil)
    ckpt = tmp_path / "run.ckpt"
    train([Source(crops)], cfg.model_copy(update={"checkpoint_every": 2}), checkpoint=ckpt, tag="a")
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        train([Source(crops)], cfg, checkpoint=ckpt, tag="b")


def test_a_killed_training_resumes_to_the_same_model(sim, tmp_path):
    import torch

    data = [DataSource(path=sim / "real/manifest.jsonl")]
    cfg = detector_config(**TINY | {"steps": 20, "checkpoint_every": 5})
    whole = fit_detector(data, tmp_path / "whole.gkm", cfg)

    def stop(step: int, n: int) -> None:
        if step == 12:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_detector(data, tmp_path / "again.gkm", cfg, progress=stop)
    assert (tmp_path / "again.gkm.ckpt").is_file() and not (tmp_path / "again.gkm").exists()
    said = []
    again = fit_detector(data, tmp_path / "again.gkm", cfg, log=said.append)
    assert any("resuming" in s for s in said) and not (tmp_path / "again.gkm.ckpt").exists()
    for k, v in whole.net.state_dict().items():
        assert torch.allclose(v.float(), again.net.state_dict()[k].float(), atol=1e-5), k


def test_predict_memory_stays_flat_as_the_input_grows(model, tmp_path):
    import tracemalloc

    manifest = generate(tmp_path / "many", SimConfig(domain="real", n=1000, size=96, seed=9), workers=1)
    recs = records(manifest)
    write_manifest(recs[:250], tmp_path / "quarter.jsonl")
    peaks = {}
    for name, src in (("250", tmp_path / "quarter.jsonl"), ("1000", manifest)):
        tracemalloc.start()
        rep = predict_to_manifest(model, DataSource(path=src), tmp_path / f"p{name}.jsonl", batch_size=32)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert rep.faces == int(name)
    # holding every crop would make the peak grow about fourfold
    assert peaks["1000"] < 1.5 * peaks["250"], peaks


def test_train_predict_export_commands(sim, tmp_path):
    run = CliRunner().invoke
    m = tmp_path / "m.gkm"
    base = ["train", str(sim / "real/manifest.jsonl"), "-o", str(m), "--steps", "6", "--size", "32", "--threads", "1"]
    assert run(app, base).exit_code == 0 and m.is_file()
    before = m.read_bytes()
    r = run(app, base)
    assert r.exit_code == 2 and "--overwrite" in r.output and m.read_bytes() == before
    r = run(app, ["train", "-o", str(tmp_path / "x.gkm"), "--strategy", "mix"])
    assert r.exit_code == 2 and "training sets" in r.output
    p = tmp_path / "p.jsonl"
    r = run(app, ["predict", str(m), str(sim / "real/manifest.jsonl"), "-o", str(p)])
    assert r.exit_code == 0, r.output
    assert "NME(inter_ocular)" in r.output and "faces/s" in r.output
    assert json.loads((tmp_path / "p.jsonl.report.json").read_text())["faces"] == 60
    r = run(app, ["predict", str(m), str(sim / "real/manifest.jsonl"), "-o", str(tmp_path / "d.jsonl"),
                  "--boxes", "detect"])
    assert r.exit_code == 1 and "detector missed" in r.output  # some faces are not found: reported
    assert run(app, ["export", str(m), str(tmp_path / "m.onnx")]).exit_code == 0
    r = run(app, ["predict", str(tmp_path / "m.onnx"), str(sim / "real/manifest.jsonl"), "-o", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 0, r.output
    (tmp_path / "junk.gkm").write_text("junk")
    r = run(app, ["predict", str(tmp_path / "junk.gkm"), str(sim / "real/manifest.jsonl"), "-o", str(tmp_path / "j.jsonl")])
    assert r.exit_code == 2 and "junk.gkm: not a readable gapkit model file" in r.output


def test_train_one_benchmark_strategy_from_a_config(sim, tmp_path):
    for name, sc in {"syn": SimConfig(domain="synthetic", n=30, size=64, seed=4),
                     "test": SimConfig(domain="real", n=10, size=64, seed=4, start=5000)}.items():
        generate(tmp_path / name, sc, workers=1)
    toml = tmp_path / "b.toml"
    toml.write_text(f"""name = "t"
[real_train]
path = "{sim / 'real/manifest.jsonl'}"
[real_test]
path = "test/manifest.jsonl"
[[synthetic]]
path = "syn/manifest.jsonl"
[train]
steps = 6
batch_size = 8
size = 32
width = 4
""")
    r = CliRunner().invoke(app, ["train", "--config", str(toml), "--strategy", "finetune", "--n-real", "40",
                                 "-o", str(tmp_path / "ft.gkm")])
    assert r.exit_code == 0, r.output
    det = Detector.load(tmp_path / "ft.gkm")
    assert det.meta.strategy == "finetune" and det.meta.train_set.n == 40 and det.meta.calibration is not None
    assert not (tmp_path / ".ft.gkm.work").exists()  # its working folder is gone, and only it


@pytest.mark.realdata
def test_train_and_predict_on_300w(shared, tmp_path):
    data = shared / "300w"
    det = fit_detector([DataSource(path=data, splits=["train"])], tmp_path / "m.gkm",
                       detector_config(steps=150))
    assert det.meta.train_set.n == 226 and det.meta.calibration is not None
    src = DataSource(path=data, splits=["common"])
    labels = predict_to_manifest(det, src, tmp_path / "l.jsonl").scores()
    detect = predict_to_manifest(det, src, tmp_path / "d.jsonl", boxes="detect").scores()
    assert labels["n"] == 224 and labels["nme_pct"] < 15
    assert detect["found"] >= 0.8 * 224 and detect["nme_pct"] < 20


def test_a_file_that_names_no_detector_is_read_as_haar_its_calibrations_detector(model):
    # Files from before detectors were named were calibrated on Haar: never on the new default.
    from gapkit.detect import DEFAULT_DETECTOR, HaarDetector
    from gapkit.predict import model_detector

    unnamed = Detector(model.net, model.meta.model_copy(update={"detector": None}), model.path)
    assert model_detector(unnamed).name == HaarDetector().name != DEFAULT_DETECTOR
