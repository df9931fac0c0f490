"""Trainer throughput on CPU (and CUDA when present).

Prints:
1. raw decode: ``cv2.imread`` images/s on the simulator's real-domain JPEGs (the baseline);
2. the training loader: augmented 128 px crops/s from gapkit's batch stream (decoded once,
   then geometric + photometric augmentation every step), on one core, and its ratio to
   the decode rate (target >= 0.8);
3. training steps/s of the fixed detector at 64 and 128 px (batch 32), and at 256 px on
   CUDA when there is one, with its peak memory.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2

from gapkit.faceset import load
from gapkit.sim import SimConfig, generate
from gapkit.train import Augment, FaceCrops, Source
from gapkit.train.data import batches
from gapkit.train.model import LandmarkNet
from gapkit.train.trainer import throughput


def main() -> None:
    import torch

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "real", SimConfig(domain="real", n=600, size=256, seed=0), workers=2)
        faces, _ = load(manifest)
        recs = faces.records
        paths = [r.image for r in recs]
        for p in paths:
            Path(p).read_bytes()
        t = time.perf_counter()
        for p in paths:
            cv2.imread(p, cv2.IMREAD_COLOR)
        decode = len(paths) / (time.perf_counter() - t)
        crops = FaceCrops(recs, size=128)
    n_batches, bs = 40, 32
    t = time.perf_counter()
    for _ in batches([Source(crops)], bs, n_batches, Augment(), seed=0):
        pass
    loader = n_batches * bs / (time.perf_counter() - t)
    print(f"cv2.imread decode, 256 px JPEG (baseline): {decode:8.0f} images/s (1 core)")
    print(f"gapkit loader, augmented 128 px crops   : {loader:8.0f} images/s (1 core)  "
          f"ratio {loader / decode:.2f} (target >= 0.8)")
    print(f"torch threads: {torch.get_num_threads()}")
    for size, width in ((64, 16), (128, 32)):
        sps = throughput(LandmarkNet(68, width), size, 32, steps=8)
        print(f"train step, {size} px, width {width}, batch 32, CPU: {sps:6.2f} steps/s = {32 * sps:6.0f} images/s")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        sps = throughput(LandmarkNet(68, 32), 256, 64, steps=20, device="cuda")
        print(f"train step, 256 px, width 32, batch 64, CUDA: {sps:6.2f} steps/s = {64 * sps:6.0f} images/s, "
              f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
