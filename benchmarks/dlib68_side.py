"""dlib's pretrained 68-point model (``face-recognition-models``) as a side process for
``refine_bench.py``. Needs only dlib, NumPy and that package, in a side environment:

    pip install dlib-bin numpy face-recognition-models

Reads a JSON job on stdin: {"calibrate": [[image, box], ...], "test": [[image, box], ...]}, with
boxes [x, y, w, h] around each face's labelled landmarks, 0-based image pixels. Each face gets
dlib's own frontal-face detection (the boxes the model was trained on): the detection that
overlaps its landmark box best. Where dlib finds none, a box is predicted from the landmark
box by a linear map fitted on the ``calibrate`` faces (training faces, never the test faces).
Writes {"pred": (N, 68, 2), "found": [bool, ...], "predict_s": ...} to stdout.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

import dlib
import numpy as np


def iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    w, h = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def main() -> None:
    job = json.load(sys.stdin)
    folder = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0]) / "models"
    predictor = dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat"))
    detector = dlib.get_frontal_face_detector()

    def detect(path, box):
        img = dlib.load_rgb_image(path)
        best, score = None, 0.3
        for d in detector(img, 1):
            r = (d.left(), d.top(), d.width(), d.height())
            if iou(r, box) > score:
                best, score = r, iou(r, box)
        return img, best

    # Detection box (cx, cy, side) as a linear function of the landmark box (cx, cy, w, h, 1).
    feats, targets = [], []
    for path, box in job["calibrate"]:
        _, det = detect(path, box)
        if det is not None:
            x, y, w, h = box
            feats.append([x + w / 2, y + h / 2, w, h, 1.0])
            targets.append([det[0] + det[2] / 2, det[1] + det[3] / 2, det[2]])
    coef = np.linalg.lstsq(np.array(feats), np.array(targets), rcond=None)[0]
    preds, found = [], []
    t = time.perf_counter()
    for path, box in job["test"]:
        img, det = detect(path, box)
        found.append(det is not None)
        if det is None:
            x, y, w, h = box
            cx, cy, side = np.array([x + w / 2, y + h / 2, w, h, 1.0]) @ coef
            det = (cx - side / 2, cy - side / 2, side, side)
        r = dlib.rectangle(*(int(round(v)) for v in (det[0], det[1], det[0] + det[2], det[1] + det[3])))
        s = predictor(img, r)
        preds.append([[s.part(i).x, s.part(i).y] for i in range(68)])
    json.dump({"pred": preds, "found": found, "predict_s": time.perf_counter() - t,
               "calibration_faces": len(feats)}, sys.stdout)


if __name__ == "__main__":
    main()
