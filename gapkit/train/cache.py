"""A crop cache that scales: the crops of a face set built once per (faces, size, margin, crop
policy) into a memory-mapped ``.npy`` on disk, shared by every process that opens it (training
workers, Ray tasks). Memory per process stays bounded as the set grows: pages are read from the
file as batches touch them and belong to the OS page cache, not to the process's heap.

The key is the content: face ids, their crop boxes, the crop settings and the bytes of every
image file (blake2b), so an edited image or label box gets a new entry and a stale one is
never read. A folder ``ROOT/KEY/`` holds ``images.npy`` (N, S, S, 3) uint8 BGR, ``matrices.npy``
(N, 2, 3) image -> crop and ``meta.json``; it is built under a temporary name and renamed into
place, so a reader never sees half a cache and two builders do not clash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from gapkit.crop import CROP_POLICY, crop_face
from gapkit.errors import GapkitError
from gapkit.records import FaceRecord

VERSION = 1
CHUNK = 256


def cache_key(records: Sequence[FaceRecord], size: int, margin: float) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([VERSION, CROP_POLICY, size, float(margin)]).encode())
    for r in records:
        box = r.bbox or r.landmark_box()
        h.update(json.dumps([r.id, [round(float(v), 4) for v in box]]).encode())
        try:
            with open(r.image, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise GapkitError(f"{r.image}: missing or unreadable image (record {r.id}): {exc.strerror}") from None
    return h.hexdigest()


def _crop(r: FaceRecord, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.imread(r.image, cv2.IMREAD_COLOR)
    if img is None:
        raise GapkitError(f"{r.image}: missing or unreadable image (record {r.id})")
    return crop_face(img, r, size, margin)


def open_cache(records: Sequence[FaceRecord], size: int, margin: float, root: str | Path, threads: int = 2,
               progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, Path]:
    """(images (N, S, S, 3) read-only memmap, matrices (N, 2, 3), folder) for ``records``,
    building the cache entry first when there is none."""
    root = Path(root)
    folder = root / cache_key(records, size, margin)
    if not (folder / "meta.json").is_file():
        _build(records, size, margin, folder, threads, progress)
    images = np.load(folder / "images.npy", mmap_mode="r")
    matrices = np.load(folder / "matrices.npy")
    if images.shape != (len(records), size, size, 3):
        raise GapkitError(f"{folder}: the cache holds {images.shape}, not {len(records)} crops of {size} px")
    return images, matrices, folder


def _build(records: Sequence[FaceRecord], size: int, margin: float, folder: Path, threads: int,
           progress: Callable[[int], None] | None) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a previous build of this process's, killed
    tmp.mkdir()
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(records), size, size, 3))
        matrices = np.empty((len(records), 2, 3))
        with ThreadPoolExecutor(max(1, threads)) as pool:  # OpenCV decodes without the GIL
            for start in range(0, len(records), CHUNK):
                chunk = records[start:start + CHUNK]
                for j, (crop, m) in enumerate(pool.map(lambda r: _crop(r, size, margin), chunk)):
                    images[start + j], matrices[start + j] = crop, m
                if progress:
                    progress(len(chunk))
        images.flush()
        del images
        np.save(tmp / "matrices.npy", matrices)
        (tmp / "meta.json").write_text(json.dumps({"version": VERSION, "crop_policy": CROP_POLICY, "size": size,
                                                   "margin": margin, "n": len(records)}))
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished the same entry first: use theirs
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
