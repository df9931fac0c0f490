"""Face crops in memory, augmentation, and the samplers the strategies need.

Crops follow the one crop policy of :mod:`gapkit.crop`, for training and testing alike. They
are decoded once and kept as uint8 (a 128 px crop is 48 KB), so an epoch costs augmentation
only. Points stay 0-based pixel (x, y); in a crop they are in crop pixels, and
:meth:`FaceCrops.to_image` maps predictions back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gapkit.augment import Augment, augment, to_tensor_batch
from gapkit.crop import apply_affine, crop_face, invert_affine
from gapkit.errors import GapkitError
from gapkit.records import FaceRecord
from gapkit.schemes import get_scheme
from gapkit.train.cache import open_cache


class FaceCrops:
    """Decoded crops of a list of records in one scheme: ``images`` (N, S, S, 3) uint8 BGR,
    ``points`` (N, K, 2) crop pixels (NaN = missing), ``matrices`` (N, 2, 3) image -> crop, and
    ``paths``, each face's image file."""

    def __init__(self, records: Sequence[FaceRecord], size: int = 128, margin: float = 1.3,
                 points: np.ndarray | None = None, cache: str | Path | None = None, threads: int = 2):
        """With ``cache`` (a folder), the crops come from :mod:`gapkit.train.cache`: built there once,
        then memory-mapped read-only, and shared by every process that opens them."""
        if not records:
            raise GapkitError("no face records to crop")
        schemes = {r.scheme for r in records}
        if len(schemes) != 1:
            raise GapkitError(f"records mix schemes: {sorted(schemes)}")
        self.scheme = get_scheme(schemes.pop())
        self.ids = [r.id for r in records]
        self.paths = [r.image for r in records]  # each face's image file (a second stage reads it)
        self.size = size
        self.cache_file: Path | None = None
        labels = np.stack([r.points for r in records]) if points is None else np.asarray(points, float)
        if cache is not None:
            self.images, self.matrices, folder = open_cache(records, size, margin, cache, threads)
            self.cache_file = folder / "images.npy"
        else:
            self.images = np.empty((len(records), size, size, 3), np.uint8)
            self.matrices = np.empty((len(records), 2, 3))
            for i, r in enumerate(records):
                img = cv2.imread(r.image, cv2.IMREAD_COLOR)
                if img is None:
                    raise GapkitError(f"{r.image}: missing or unreadable image (record {r.id})")
                self.images[i], self.matrices[i] = crop_face(img, r, size, margin)
        self.points = np.stack([apply_affine(m, p) for m, p in zip(self.matrices, labels, strict=True)])

    def __getstate__(self) -> dict:
        # a memory-mapped set travels (to a worker, a Ray task) as its file name, not its pixels
        state = dict(self.__dict__)
        if isinstance(self.images, np.memmap) and self.cache_file is not None:
            state["images"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.images is None:
            self.images = np.load(self.cache_file, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)

    def to_image(self, index: np.ndarray | Sequence[int], crop_points: np.ndarray) -> np.ndarray:
        """Crop-pixel predictions (n, K, 2) of crops ``index`` -> original image pixels."""
        out = np.empty_like(crop_points)
        for j, i in enumerate(np.asarray(index)):
            out[j] = apply_affine(invert_affine(self.matrices[i]), crop_points[j])
        return out

    def with_points(self, image_points: np.ndarray) -> FaceCrops:
        """The same crops with other labels (image pixels, (N, K', 2)), e.g. adapted ones."""
        new = object.__new__(FaceCrops)
        new.__dict__.update(self.__dict__)
        image_points = np.asarray(image_points, float)
        new.points = np.stack([apply_affine(self.matrices[i], image_points[i]) for i in range(len(self))])
        if image_points.shape[1] != self.scheme.num_points:
            raise GapkitError("with_points keeps the scheme; map the labels first")
        return new

    def subset(self, index: Sequence[int]) -> FaceCrops:
        idx = np.asarray(index, int)
        new = object.__new__(FaceCrops)
        new.__dict__.update(self.__dict__)
        new.ids = [self.ids[i] for i in idx]
        new.paths = [self.paths[i] for i in idx]
        new.images, new.points, new.matrices = self.images[idx], self.points[idx], self.matrices[idx]
        new.cache_file = None  # the subset's pixels are its own (in memory)
        return new


@dataclass
class Source:
    """Crops to draw from, and the share of each batch they fill (the strategies' data mix)."""

    crops: FaceCrops
    share: float = 1.0


def _counts(sources: Sequence[Source], batch_size: int) -> list[int]:
    """Places per batch of each source: round(share * B), the last taking the rest."""
    counts = [int(round(s.share * batch_size)) for s in sources]
    counts[-1] = batch_size - sum(counts[:-1])
    if min(counts) < 0:
        raise GapkitError("batch shares must add up to at most 1")
    return counts


def batches(sources: Sequence[Source], batch_size: int, steps: int, aug: Augment, seed: int,
            rank: int = 0, world: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` augmented batches: (B, S, S, 3) uint8 images and (B, K, 2) points.

    Each batch takes ``round(share * B)`` faces from each source (the last takes the rest),
    drawn without replacement epoch by epoch per source. Under DDP each rank draws its own
    stream (seeded by rank).
    """
    rng = np.random.default_rng([seed, rank, world])
    counts = _counts(sources, batch_size)
    flips = [np.array(s.crops.scheme.flip) for s in sources]
    orders: list[list[int]] = [[] for _ in sources]
    size = sources[0].crops.size
    k = sources[0].crops.points.shape[1]
    for _ in range(steps):
        imgs = np.empty((batch_size, size, size, 3), np.uint8)
        pts = np.empty((batch_size, k, 2))
        j = 0
        for si, (src, n) in enumerate(zip(sources, counts, strict=True)):
            for _ in range(n):
                if not orders[si]:
                    orders[si] = rng.permutation(len(src.crops)).tolist()
                i = orders[si].pop()
                imgs[j], pts[j] = augment(src.crops.images[i], src.crops.points[i], aug, flips[si], rng)
                j += 1
        yield imgs, pts


def _draws(n: int, count: int, step: int, key: list[int]) -> np.ndarray:
    """The ``count`` indices into ``n`` faces that ``step`` draws: positions step * count ... of an
    endless stream of seeded permutations (one per epoch), so any step is computed on its own."""
    pos = step * count + np.arange(count)
    epochs = pos // n
    out = np.empty(count, int)
    for e in np.unique(epochs):
        here = epochs == e
        out[here] = np.random.default_rng([*key, int(e)]).permutation(n)[pos[here] % n]
    return out


class StepBatches:
    """Map-style batches for a torch DataLoader with worker processes: item ``step`` is that step's
    augmented batch, (B, 3, S, S) float32 in [-1, 1] and (B, K, 2) points, computed from (seed,
    rank, step) alone, so workers need no shared state and a resumed run starts at its step.
    Each source fills ``round(share * B)`` places (the last the rest), drawing without
    replacement epoch by epoch, as :func:`batches` does (with another random stream)."""

    def __init__(self, sources: Sequence[Source], batch_size: int, steps: int, aug: Augment, seed: int,
                 rank: int = 0, world: int = 1):
        self.sources, self.batch_size, self.steps, self.aug = list(sources), batch_size, steps, aug
        self.key = [seed, rank, world]
        self.counts = _counts(sources, batch_size)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int):
        import torch  # deferred: gapkit.refine imports this module and stays torch-free

        rng = np.random.default_rng([*self.key, step, 1])
        size = self.sources[0].crops.size
        k = self.sources[0].crops.points.shape[1]
        imgs = np.empty((self.batch_size, size, size, 3), np.uint8)
        pts = np.empty((self.batch_size, k, 2))
        j = 0
        for si, (src, n) in enumerate(zip(self.sources, self.counts, strict=True)):
            flip = np.array(src.crops.scheme.flip)
            for i in _draws(len(src.crops), n, step, [*self.key, si]):
                imgs[j], pts[j] = augment(src.crops.images[i], src.crops.points[i], self.aug, flip, rng)
                j += 1
        return to_tensor_batch(imgs), torch.from_numpy(pts)
