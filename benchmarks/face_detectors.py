"""Which face detector should `gapkit predict --boxes detect` and the benchmark's detector-box
protocol use? Every registered detector, side by side in one run, on LFPW test (224 faces).

For each detector: the box calibration is fitted on the 300-W training images (226 full
photographs, never a test face), the test images are searched, and one landmark model (the
default detector trained real-only on the 1,675-face pool, trained once and shared) predicts
from each detector's calibrated boxes. Printed per detector: faces found and missed, seconds
per image, NME on the faces found with a 95% face bootstrap interval, FR@8% counting a missed
face as a failure, and the paired NME difference against OpenCV's Haar cascade on the faces
both found. The label-box NME of the same model is the ceiling.

    python benchmarks/face_detectors.py [--steps 8000] [--out runs/face-detectors]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gapkit.bench.stats import cell_interval, difference
from gapkit.detect import DETECTORS, build_detector, calibrate
from gapkit.devices import set_threads
from gapkit.errors import ConfigError
from gapkit.faceset import DataSource, load
from gapkit.formats.manifest import read_manifest
from gapkit.predict import predict_to_manifest
from gapkit.train.detector import Detector
from gapkit.train.fit import detector_config, fit_detector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CANDIDATES = ["opencv-haar", "opencv-haar:haarcascade_frontalface_alt2.xml", "dlib-hog:0", "dlib-hog:1"]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8000, help="training steps of the shared landmark model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/face-detectors")
    return ap.parse_args()


def _model(out: Path, steps: int) -> Detector:
    path = out / "pool.gkm"
    if not path.is_file():  # trained once; a rerun reuses it
        pool = [DataSource(path=SHARED / "300w", format="300w", splits=["train"]),
                DataSource(path=SHARED / "300w_extra", format="300w")]
        fit_detector(pool, path, detector_config(steps=steps))
    return Detector.load(path)


def _per_face(pred: Path) -> dict[str, float]:
    return {r.id.split("#")[0]: r.attributes["nme"] for r in read_manifest(pred) if "nme" in r.attributes}


def _score(model: Detector, name: str, train: list, test: DataSource, out: Path) -> dict:
    """One detector: calibrate on the training faces, predict the test faces from its boxes."""
    det = build_detector(name)
    cal = calibrate(train, det)
    model.meta = model.meta.model_copy(update={"calibration": asdict(cal), "detector": det.name})
    pred = out / f"pred_{det.name.replace(':', '_')}.jsonl"
    t0 = time.perf_counter()
    rep = predict_to_manifest(model, test, pred, boxes="detect", detector=det, overwrite=True)
    seconds = time.perf_counter() - t0
    # found: labelled test faces a detection was matched to (other faces it finds are written too)
    return {"detector": det.name, "calibrated_on": cal.n, "found": len(rep.nmes), "missed": rep.missed,
            "other_faces": rep.faces - len(rep.nmes), "s_per_image": seconds / max(rep.images, 1),
            "scores": rep.scores(), "per_face": _per_face(pred)}


def main() -> None:
    args = _args()
    set_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = _model(out, args.steps)
    train, _ = load(DataSource(path=SHARED / "300w", format="300w", splits=["train"]), require="300-W train")
    test = DataSource(path=SHARED / "300w", format="300w", splits=["common"])
    label = predict_to_manifest(model, test, out / "pred_labels.jsonl", overwrite=True)
    rows = {"label boxes": {"found": label.faces, "missed": 0, "scores": label.scores(),
                            "per_face": _per_face(out / "pred_labels.jsonl")}}
    for name in CANDIDATES:
        try:
            rows[name] = _score(model, name, train.records, test, out)
        except ConfigError as exc:  # a detector whose package is not installed here
            print(f"{name}: skipped ({exc})")
    _print(rows)
    (out / "results.json").write_text(json.dumps({k: {kk: vv for kk, vv in v.items()} for k, v in rows.items()},
                                                 indent=1, default=float))
    print(f"registered detectors: {', '.join(DETECTORS)}; wrote {out}/results.json")


def _print(rows: dict) -> None:
    haar = rows.get("opencv-haar")
    for name, r in rows.items():
        e = np.array(list(r["per_face"].values()))[None]
        sc = r["scores"]
        line = (f"{name:46s} found {r['found']:3d} missed {r['missed']:2d}  NME {cell_interval(e)}  "
                f"FR@8% (missed = failure) {100 * sc.get('fr_all', sc['fr']):.1f}%")
        if "s_per_image" in r:
            line += f"  {r['s_per_image']:.3f} s/image, {r['other_faces']} other faces, calibrated on {r['calibrated_on']}"
        if haar is not None and name not in ("label boxes", "opencv-haar") and "s_per_image" in r:
            both = sorted(set(r["per_face"]) & set(haar["per_face"]))
            d = difference(np.array([[r["per_face"][i] for i in both]]), np.array([[haar["per_face"][i] for i in both]]))
            line += f"  vs Haar on {len(both)} common faces: {d}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
