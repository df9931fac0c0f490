"""Paired shapes: the same faces labelled in two schemes, and the checks they pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gapkit.errors import AdapterError
from gapkit.faceset import FaceSet
from gapkit.records import FaceRecord
from gapkit.records import one_scheme as records_scheme


def check_shapes(points: np.ndarray, k: int, what: str, ids: list[str] | None = None,
                 deep: bool = True) -> np.ndarray:
    """(N, k, 2) float array, or an error naming the first bad face. ``deep=False`` leaves the
    degenerate-shape test to the Procrustes fit (it is the costly part at millions of shapes)."""
    arr = np.asarray(points, float)
    if arr.ndim != 3 or arr.shape[1:] != (k, 2):
        raise AdapterError(f"{what}: expected shapes (N, {k}, 2), got {arr.shape}")
    if not len(arr):
        raise AdapterError(f"{what}: no shapes")
    if np.isinf(arr).any():
        raise AdapterError(f"{what}: infinite coordinates")
    has_nan = np.isnan(arr).any()
    if has_nan:
        for i in np.flatnonzero((~np.isnan(arr).any(-1)).sum(1) < 3):
            name = ids[i] if ids else f"#{i}"
            raise AdapterError(f"{what} {name}: fewer than 3 present points (NaN shape)")
    if not deep:
        return arr
    lo, hi = (np.nanmin(arr, axis=1), np.nanmax(arr, axis=1)) if has_nan else (arr.min(axis=1), arr.max(axis=1))
    spread = hi - lo
    for i in np.flatnonzero(np.hypot(spread[:, 0], spread[:, 1]) < 1e-6):
        name = ids[i] if ids else f"#{i}"
        raise AdapterError(f"{what} {name}: degenerate shape (all points coincide)")
    return arr


@dataclass
class Pairs:
    """Records of the same faces in two schemes, matched by id."""

    ids: list[str]
    source: np.ndarray  # (N, K_s, 2)
    target: np.ndarray  # (N, K_t, 2)
    source_scheme: str
    target_scheme: str
    only_source: list[str]
    only_target: list[str]
    images: list[str] = field(default_factory=list)  # the target record's image of each pair
    source_depth: np.ndarray | None = None  # (N, K_s) when every source record has attributes z

    def subset(self, n: int, seed: int = 0) -> Pairs:
        """A seeded random ``n`` of the pairs (all of them when there are fewer)."""
        if n < 1:
            raise AdapterError(f"--max-pairs must be at least 1, got {n}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(self.ids))[:n])
        return Pairs([self.ids[i] for i in keep], self.source[keep], self.target[keep], self.source_scheme,
                     self.target_scheme, self.only_source, self.only_target,
                     [self.images[i] for i in keep] if self.images else [],
                     None if self.source_depth is None else self.source_depth[keep])


def one_scheme(records: Sequence[FaceRecord], side: str) -> str:
    """The one scheme of ``records``; mixed schemes (or none) are an AdapterError naming ``side``."""
    return records_scheme(records, side, AdapterError)


def record_depth(records: Sequence[FaceRecord]) -> np.ndarray | None:
    """(N, K) per-point depth from each record's ``attributes["z"]``, or None when some record has
    none; a depth of the wrong length or with NaN is an error naming the record."""
    if not records or any("z" not in r.attributes for r in records):
        return None
    out = np.empty((len(records), len(records[0].points)))
    for i, r in enumerate(records):
        z = np.asarray(r.attributes["z"], float) if isinstance(r.attributes["z"], list) else np.array([])
        if z.shape != (len(r.points),) or not np.isfinite(z).all():
            raise AdapterError(f"record {r.id}: attributes z must be {len(r.points)} finite numbers, one a point")
        out[i] = z
    return out


def pair_records(source: FaceSet | Sequence[FaceRecord], target: FaceSet | Sequence[FaceRecord]) -> Pairs:
    """Match FaceRecords by id. Ids on one side only are returned, not dropped silently."""
    s_scheme, t_scheme = one_scheme(source, "source"), one_scheme(target, "target")
    by_id = {r.id: r for r in target}
    src_ids = {r.id for r in source}
    common = [r for r in source if r.id in by_id]
    if not common:
        raise AdapterError(f"no face id is in both the source ({len(source)} records) and the target "
                           f"({len(target)} records); pairs are matched by id")
    return Pairs(ids=[r.id for r in common], source=FaceSet(common).points,
                 target=FaceSet([by_id[r.id] for r in common]).points, source_scheme=s_scheme,
                 target_scheme=t_scheme, only_source=sorted(src_ids - by_id.keys()),
                 only_target=sorted(by_id.keys() - src_ids), images=[by_id[r.id].image for r in common],
                 source_depth=record_depth(common))
