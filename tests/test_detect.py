"""The detector-box test protocol: pairing detections with labelled faces, the box calibration
fitted on training faces, OpenCV's bundled Haar cascade on real faces, and the benchmark
scoring every model under both protocols with missed faces counted."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import tiny_bench_sets

from gapkit.detect import (
    DETECTORS,
    BoxCalibration,
    DlibHogDetector,
    HaarDetector,
    build_detector,
    detect_records,
    detector_boxes,
    match,
    register_detector,
)
from gapkit.errors import ConfigError, GapkitError
from gapkit.records import FaceRecord


@pytest.mark.parametrize("boxes, expected", [
    ([], None),
    ([(40, 40, 20, 20)], 0),                        # centred, same size
    ([(200, 200, 20, 20)], None),                   # centre outside the label box
    ([(45, 45, 5, 5)], None),                       # a quarter of the size: another, smaller face
    ([(10, 10, 90, 90)], None),                     # centre inside but far too large
    ([(35, 35, 20, 20), (40, 40, 20, 20)], 1),      # the nearer centre wins
    ([(30, 30, 40, 40)], 0),                        # twice the side of the face: still it
])
def test_match_pairs_a_detection_with_the_labelled_face(boxes, expected):
    label_box = (30.0, 30.0, 40.0, 40.0)  # centre (50, 50)
    assert match(np.array(boxes, float).reshape(-1, 4), label_box) == expected


def test_calibration_recovers_a_known_box_relation():
    rng = np.random.default_rng(0)
    det = np.column_stack([rng.uniform(0, 500, (50, 2)), np.repeat(rng.uniform(50, 200, (50, 1)), 2, 1)])
    s = det[:, 2]
    # landmark box: shifted down by 0.1 side, 0.8 wide, 0.9 high
    cx, cy = det[:, 0] + s / 2, det[:, 1] + s / 2 + 0.1 * s
    gt = np.column_stack([cx - 0.4 * s, cy - 0.45 * s, 0.8 * s, 0.9 * s])
    cal = BoxCalibration.fit(det, gt)
    assert (cal.dx, cal.dy, cal.sw, cal.sh) == pytest.approx((0, 0.1, 0.8, 0.9))
    np.testing.assert_allclose([cal(b) for b in det], gt, atol=1e-9)


def test_calibration_refuses_too_few_faces():
    with pytest.raises(GapkitError, match="found only 2 training faces"):
        BoxCalibration.fit(np.ones((2, 4)), np.ones((2, 4)))


def test_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    rec = FaceRecord(id="f", image=str(bad), width=100, height=100, scheme="ibug68",
                     points=np.zeros((68, 2)) + np.arange(68)[:, None])
    with pytest.raises(GapkitError, match="broken.jpg: missing or unreadable"):
        detect_records([rec])


def test_haar_cascade_ships_with_opencv_and_finds_nothing_in_noise():
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    assert HaarDetector()(img).shape == (0, 4)


def test_the_detector_registry_builds_a_detector_back_from_its_name():
    default = build_detector()
    assert isinstance(default, DlibHogDetector) and default.name == "dlib-hog:0"  # what model files record
    haar = build_detector("opencv-haar")
    assert isinstance(haar, HaarDetector) and haar.name == "opencv-haar:haarcascade_frontalface_default.xml"
    alt = build_detector("opencv-haar:haarcascade_frontalface_alt2.xml")
    assert alt.name == "opencv-haar:haarcascade_frontalface_alt2.xml" and build_detector(alt.name).name == alt.name
    with pytest.raises(ConfigError, match="unknown face detector 'yunet'; this gapkit has opencv-haar, dlib-hog"):
        build_detector("yunet")


def test_a_new_detector_is_one_class_and_its_registration():
    try:
        @register_detector
        class Fixed:
            kind = "fixed-test"

            def __init__(self, side: str = "10"):
                self.name = f"{self.kind}:{side}"
                self.side = float(side)

            def __call__(self, img):
                return np.array([[0.0, 0.0, self.side, self.side]])

        det = build_detector("fixed-test:20")
        assert det.name == "fixed-test:20" and det(np.zeros((5, 5))).tolist() == [[0, 0, 20, 20]]
        assert build_detector("fixed-test").side == 10
        with pytest.raises(ValueError, match="taken"):
            register_detector(Fixed)
    finally:
        DETECTORS.pop("fixed-test", None)


def test_dlib_hog_is_named_back_and_finds_nothing_in_noise():
    det = build_detector("dlib-hog:0")
    assert det.name == "dlib-hog:0" and build_detector(det.name).upsample == 0
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    assert det(img).shape == (0, 4)


@pytest.mark.parametrize("name", ["opencv-haar", "dlib-hog:0"])
def test_each_detector_finds_the_real_faces_and_its_calibrated_box_fits(shared, name):
    # dlib-bin is a dependency: no skip, a missing dlib fails here
    test, train = _records(shared, "common"), _records(shared, "train")
    det = detector_boxes(test, train, build_detector(name))
    assert det.detector == build_detector(name).name
    assert len(det.records) >= 0.9 * len(test), f"found only {len(det.records)} of {len(test)}"
    centre = np.array([[x + w / 2, y + h / 2] for x, y, w, h in (r.bbox for r in det.records)])
    truth = np.array([[x + w / 2, y + h / 2] for x, y, w, h in (r.landmark_box() for r in det.records)])
    side = np.array([np.sqrt(w * h) for *_, w, h in (r.landmark_box() for r in det.records)])
    assert np.median(np.linalg.norm(centre - truth, axis=1) / side) < 0.1


def _records(root, split: str):
    from gapkit.faceset import DataSource, load

    faces, _ = load([DataSource(path=root / "300w", format="300w", splits=[split])], scheme="ibug68")
    return faces.records


def test_detector_boxes_on_real_faces(shared):
    """On LFPW test the Haar cascade finds most faces, and its calibrated box (fitted on the
    training faces only) lands near the landmark box."""
    test, train = _records(shared, "common"), _records(shared, "train")
    det = detector_boxes(test, train)
    assert len(det.records) + len(det.missed) == len(test)
    assert len(det.records) >= 0.8 * len(test), f"found only {len(det.records)} of {len(test)}"
    assert 20 <= det.calibration.n <= len(train)
    ious = []
    for r in det.records:
        (ax, ay, aw, ah), (bx, by, bw, bh) = r.bbox, r.landmark_box()
        iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
        ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
        ious.append(iw * ih / (aw * ah + bw * bh - iw * ih))
    assert np.median(ious) > 0.6
    assert {r.id for r in det.records}.isdisjoint(det.missed)


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory):
    """A tiny benchmark with the detector-box protocol on simulated faces (the cascade finds
    some of them and misses the rest, which is what the protocol must report)."""
    from gapkit.bench import BenchConfig, Runner, load_data
    from gapkit.bench.config import Grid
    from gapkit.faceset import DataSource
    from gapkit.train import TrainConfig

    root = tmp_path_factory.mktemp("detbench")
    ds = {k: DataSource(path=m) for k, m in tiny_bench_sets(root, real_size=128, n_train=60, n_test=30, seed=2,
                                                           n_synthetic=30).items()}
    cfg = BenchConfig(name="det", real_train=ds["real_train"], real_test=ds["real_test"], synthetic=[ds["synthetic"]],
                      grid=Grid(n_real=[10], seeds=[0], strategies=["real_only", "synthetic_only", "label_adapt"]),
                      train=TrainConfig(steps=3, batch_size=8, size=32, width=4), detector_boxes=True,
                      face_detector="opencv-haar")  # it finds some simulated faces and misses others
    data = load_data(cfg)
    return data, Runner(cfg, root / "run").run(data), root / "run"


def test_benchmark_scores_both_protocols_and_counts_missed_faces(detector_run):
    data, rows, _ = detector_run
    det = data.detected
    assert 0 < len(det.records) < 30 and len(det.missed) == 30 - len(det.records)
    for r in rows:
        d = r.detector
        assert d is not None and d.detector.startswith("opencv-haar")
        assert (d.found, d.missed) == (len(det.records), len(det.missed)) and d.missed_ids == det.missed
        assert len(d.per_face_nme) == d.found and len(r.per_face_nme) == 30
        # a missed face counts as a failure in fr_all
        assert d.fr_all == pytest.approx((d.fr * d.found + d.missed) / 30)
    # label_adapt applied its adapter under both protocols: its detector NMEs are not synthetic_only's
    by = {r.strategy: r for r in rows}
    assert by["label_adapt"].detector.per_face_nme != by["synthetic_only"].detector.per_face_nme


def test_report_states_the_detector_protocol_and_its_misses(detector_run):
    from gapkit.bench import write_outputs

    data, rows, out = detector_run
    write_outputs(rows, out, "det")
    text = (out / "report.md").read_text()
    assert "### Detector boxes" in text
    assert f"It found {len(data.detected.records)} of 30 test faces" in text


def test_a_bad_detector_variant_is_a_configuration_error():
    with pytest.raises(ConfigError, match="dlib-hog:x: the variant is the upsampling count"):
        build_detector("dlib-hog:x")
