"""dlib's ensemble-of-regression-trees (ERT) trainer as a side process for
``detector_vs_ert.py``. Needs only dlib and NumPy (``pip install dlib-bin numpy`` in a side
environment): dlib is never a gapkit dependency.

Reads a JSON job on stdin: {"train": [[image, box, points], ...], "test": [[image, box], ...],
"options": {...}} with boxes as [left, top, right, bottom] and points (K, 2) in 0-based image
pixels (x, y). Writes {"train_s": ..., "predict_s": ..., "pred": (N_test, K, 2)} to stdout.
dlib stores points as integer pixels, so its labels and outputs are rounded: a handicap of
about 0.4 px mean error, part of the method as shipped.
"""

import json
import sys
import time

import dlib
import numpy as np


def main() -> None:
    job = json.load(sys.stdin)
    cache: dict = {}

    def image(path: str):
        if path not in cache:
            cache[path] = dlib.load_rgb_image(path)
        return cache[path]

    def rect(box) -> dlib.rectangle:
        return dlib.rectangle(*(int(round(v)) for v in box))

    images, objects = [], []
    for path, box, pts in job["train"]:
        parts = [dlib.point(int(round(x)), int(round(y))) for x, y in pts]
        images.append(image(path))
        objects.append([dlib.full_object_detection(rect(box), parts)])
    opt = dlib.shape_predictor_training_options()
    for k, v in job["options"].items():
        setattr(opt, k, v)
    t = time.perf_counter()
    model = dlib.train_shape_predictor(images, objects, opt)
    train_s = time.perf_counter() - t
    test_images = [image(path) for path, _ in job["test"]]
    t = time.perf_counter()
    pred = []
    for img, (_, box) in zip(test_images, job["test"], strict=True):
        shape = model(img, rect(box))
        pred.append([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)])
    predict_s = time.perf_counter() - t
    json.dump({"train_s": train_s, "predict_s": predict_s, "pred": np.asarray(pred, float).tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
