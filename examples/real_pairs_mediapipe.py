"""Make real label-adaptation pairs: MediaPipe FaceMesh (468 points) on the 300-W images.

MediaPipe is not a gapkit dependency, and it pins numpy<2 and protobuf<5 (onnx needs a newer
protobuf), so run this from a side environment (it runs offline); `make refine-bench` makes it:

    python -m venv .venv-mediapipe
    .venv-mediapipe/bin/pip install mediapipe==0.10.21 pydantic typer rich pillow scipy
    .venv-mediapipe/bin/pip install --no-deps -e .

Usage:
    python examples/real_pairs_mediapipe.py ../shared/data/300w ../shared/data/300w_extra \
        runs/pairs/mediapipe468.jsonl [--overwrite]

Each face is cropped around its labelled landmark box (enlarged 1.8x, as a face detector
box would be) so that FaceMesh sees the intended face; its 468 points are mapped back to
0-based image pixels; MediaPipe's relative depth goes to ``attributes["z"]`` in the same
pixel scale (smaller is nearer the camera). Faces FaceMesh misses are reported, not dropped
silently. The output keeps the 300-W ids, so `gapkit adapt fit --source OUT --target <300-W folder>`
pairs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from rich.progress import track

from gapkit.faceset import load
from gapkit.formats.manifest import write_manifest
from gapkit.records import FaceRecord


def main(sources: list[str], out: str, overwrite: bool = False) -> None:
    import mediapipe as mp

    faces, rep = load(sources)
    recs = faces.records
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    done, missed = [], []
    for r in track(recs, description="FaceMesh"):
        img = cv2.imread(r.image, cv2.IMREAD_COLOR)
        x, y, w, h = r.landmark_box()
        cx, cy, side = x + w / 2, y + h / 2, 1.8 * max(w, h)
        # A square crop, padded where it leaves the image: FaceMesh assumes a square ROI.
        x0, y0, s = int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))
        pad = max(0, -x0, -y0, x0 + s - r.width, y0 + s - r.height)
        padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
        crop = np.ascontiguousarray(padded[y0 + pad:y0 + pad + s, x0 + pad:x0 + pad + s, ::-1])
        res = mesh.process(crop)
        if not res.multi_face_landmarks:
            missed.append(r.id)
            continue
        lm = res.multi_face_landmarks[0].landmark
        # MediaPipe gives x, y normalised to the crop; pixel centres at (i + 0.5) / size.
        pts = np.array([[p.x * crop.shape[1] - 0.5 + x0, p.y * crop.shape[0] - 0.5 + y0] for p in lm[:468]])
        z = [round(p.z * crop.shape[1], 3) for p in lm[:468]]
        done.append(FaceRecord(id=r.id, image=r.image, width=r.width, height=r.height, scheme="mediapipe468",
                               points=pts, source="mediapipe-0.10.21", split=r.split,
                               attributes={"detector": "mediapipe.face_mesh", "z": z}))
    n = write_manifest(done, out, overwrite=overwrite)
    print(f"wrote {n} faces to {out}; FaceMesh found no face in {len(missed)}: {', '.join(missed[:10])}")
    if rep.problems:
        print(f"{rep.skipped} unreadable 300-W records were skipped")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--overwrite"]
    if len(args) < 2:
        sys.exit("usage: real_pairs_mediapipe.py SOURCE [SOURCE ...] OUT.jsonl [--overwrite]")
    main(args[:-1], args[-1], overwrite="--overwrite" in sys.argv)
    Path(args[-1]).exists() or sys.exit(1)
