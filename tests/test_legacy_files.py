"""Model files written before the model-file container (gapkit 0.1.0 at commit 0f9eab1,
``fixtures/legacy/make_legacy.py``) still load, and predict what that code predicted."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from gapkit.adapt import LabelAdapter
from gapkit.errors import AdapterError, ModelError
from gapkit.faceset import DataSource
from gapkit.formats.manifest import read_manifest
from gapkit.modelfile import ADAPTER, DETECTOR, read_model_file
from gapkit.predict import predict_to_manifest
from gapkit.train.detector import Detector
from gapkit.train.onnx import load_model

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def pairs():
    d = np.load(LEGACY / "pairs.npz")
    return d["source"], [str(LEGACY / "faces" / n) for n in d["images"]]


@pytest.mark.parametrize("kind, refined", [("shape", False), ("cnn", True), ("cascade", True)])
def test_an_old_adapter_predicts_what_it_did(pairs, kind, refined):
    src, images = pairs
    adapter = LabelAdapter.load(LEGACY / f"{kind}.gka")
    assert (adapter.refiner is not None) == refined
    if refined:
        assert adapter.refiner.method == kind
        pred, done, problems = adapter.predict_images(src, images)
        assert done.all() and problems == []
    else:
        pred = adapter.predict(src)
    np.testing.assert_allclose(pred, np.load(LEGACY / "expected_adapters.npz")[kind], rtol=0, atol=1e-9)


def test_an_old_model_predicts_what_it_did(tmp_path):
    model = load_model(LEGACY / "model.gkm")
    assert isinstance(model, Detector)
    out = tmp_path / "pred.jsonl"
    predict_to_manifest(model, DataSource(path=LEGACY / "sim" / "manifest.jsonl", format="manifest"), out)
    recs = sorted(read_manifest(out), key=lambda r: r.id)
    np.testing.assert_allclose(np.stack([r.points for r in recs]), np.load(LEGACY / "expected_model.npy"),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("name, kind", [("shape.gka", ADAPTER), ("cnn.gka", ADAPTER), ("model.gkm", DETECTOR)])
def test_old_files_read_through_the_one_container(name, kind):
    file = read_model_file(LEGACY / name, kind)
    assert file.meta["kind"] == kind.kind and file.arrays()


@pytest.mark.parametrize("name, kind, error", [("shape.gka", DETECTOR, ModelError), ("model.gkm", ADAPTER, AdapterError)])
def test_a_file_of_the_other_kind_is_refused_by_name(name, kind, error):
    with pytest.raises(error, match=name):
        read_model_file(LEGACY / name, kind)


def test_the_fixtures_are_the_old_files():
    # Written by 0.1.0 before the container: their meta has no weights digest for adapters.
    with zipfile.ZipFile(LEGACY / "shape.gka") as z:
        assert "weights_sha256" not in z.read("meta.json").decode()


def test_a_new_adapter_file_carries_its_digest_and_a_changed_weight_is_refused(tmp_path):
    adapter = LabelAdapter.load(LEGACY / "shape.gka")
    adapter.save(tmp_path / "new.gka")
    assert read_model_file(tmp_path / "new.gka", ADAPTER).meta["weights_sha256"]
    with zipfile.ZipFile(tmp_path / "new.gka") as z:
        meta, weights = z.read("meta.json"), bytearray(z.read("weights.npz"))
    weights[len(weights) // 2] ^= 0xFF
    with zipfile.ZipFile(tmp_path / "bad.gka", "w") as z:
        z.writestr("meta.json", meta)
        z.writestr("weights.npz", bytes(weights))
    with pytest.raises(AdapterError, match="bad.gka: the weights do not match their digest"):
        LabelAdapter.load(tmp_path / "bad.gka")
