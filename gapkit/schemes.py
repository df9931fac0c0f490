"""Landmark schemes and the deterministic mappings between them, loaded from data.

The only module that knows what an index means. Schemes live in
``schemas/schemes/*.json`` and mappings in ``schemas/mappings/*.json`` (installed as
``gapkit.schemas``): a new scheme or mapping is one JSON file there.
"""

from __future__ import annotations

import json
from collections import deque
from functools import cache
from importlib import resources
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gapkit.errors import NoMappingError, UnknownSchemeError

ContourSemantics = Literal["visible_outline", "projected_3d"]


class Normaliser(BaseModel):
    """How an NME normaliser is measured: the distance between the centroids of point
    sets ``a`` and ``b``, or sqrt(w*h) of the landmark box when ``bbox`` is true."""

    model_config = ConfigDict(extra="forbid")
    a: list[int] = Field(default_factory=list)
    b: list[int] = Field(default_factory=list)
    bbox: bool = False
    doc: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> Normaliser:
        if self.bbox == bool(self.a or self.b):
            raise ValueError("a normaliser is either bbox=true or two point sets a and b")
        if not self.bbox and not (self.a and self.b):
            raise ValueError("a distance normaliser needs both point sets a and b")
        return self


class LandmarkScheme(BaseModel):
    """One landmark convention: point names, groups, flip permutation, skeleton, normalisers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    contour_semantics: ContourSemantics
    outline: list[str] = Field(default_factory=list, description="groups tracing the face outline, where "
                               "labelling conventions disagree (projected 3-D vs visible outline)")
    points: list[str]
    groups: dict[str, list[int]]
    flip: list[int]
    skeleton: list[list[int]]
    normalisers: dict[str, Normaliser]
    default_normaliser: str
    orientation: dict[str, str] | None = None

    @property
    def num_points(self) -> int:
        return len(self.points)

    @model_validator(mode="after")
    def _consistent(self) -> LandmarkScheme:
        k = len(self.points)
        if len(set(self.points)) != k:
            raise ValueError(f"{self.name}: point names are not unique")
        if sorted(self.flip) != list(range(k)):
            raise ValueError(f"{self.name}: flip is not a permutation of 0..{k - 1}")
        idx = [i for g in self.groups.values() for i in g] + [i for p in self.skeleton for i in p]
        idx += [i for n in self.normalisers.values() for i in n.a + n.b]
        if any(not 0 <= i < k for i in idx):
            raise ValueError(f"{self.name}: an index in groups, skeleton or normalisers is out of range")
        if self.default_normaliser not in self.normalisers:
            raise ValueError(f"{self.name}: default_normaliser {self.default_normaliser!r} is not defined")
        if self.orientation and any(g not in self.groups for g in self.orientation.values()):
            raise ValueError(f"{self.name}: orientation names an unknown group")
        if any(g not in self.groups for g in self.outline):
            raise ValueError(f"{self.name}: outline names an unknown group")
        return self

    @property
    def inner_points(self) -> np.ndarray:
        """Indices of the points off the outline: the ones every convention places alike."""
        out = {i for g in self.outline for i in self.groups[g]}
        return np.array([i for i in range(self.num_points) if i not in out])

    def flip_points(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror (..., K, 2) points horizontally in an image of ``width`` pixels.

        With 0-based pixel coordinates whose origin is the corner of the top-left
        pixel, the mirror of x is ``width - x``. Indices are permuted so that the
        subject's right eye stays "right_eye".
        """
        out = points[..., self.flip, :].copy()
        out[..., 0] = width - out[..., 0]
        return out

    def edges(self) -> list[tuple[int, int]]:
        """Skeleton paths flattened to (i, j) pairs, for drawing."""
        return [(p[i], p[i + 1]) for p in self.skeleton for i in range(len(p) - 1)]


class SchemeMapping(BaseModel):
    """A deterministic map from one scheme to another, as data.

    ``entries[t]`` says how target point t is made: an index into the source, a list
    of ``[index, weight]`` pairs (a weighted mix, e.g. a midpoint), or ``{"x": [...],
    "y": [...]}`` with separate mixes per axis.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    source: str
    target: str
    status: Literal["index", "interpolated", "approximate", "composed"] = "index"
    reference: str = ""
    entries: list[int | list[tuple[int, float]] | dict[str, list[tuple[int, float]]]]

    def weights(self, k_source: int) -> np.ndarray:
        """(2, K_t, K_s) weight matrices, one per axis."""
        w = np.zeros((2, len(self.entries), k_source))
        for t, e in enumerate(self.entries):
            for axis, key in enumerate("xy"):
                mix = [(e, 1.0)] if isinstance(e, int) else (e[key] if isinstance(e, dict) else e)
                for s, wt in mix:
                    if not 0 <= s < k_source:
                        raise ValueError(f"{self.name}: source index {s} out of range")
                    w[axis, t, s] += wt
        return w


class Mapper:
    """Applies a (possibly composed) mapping to (..., K_s, 2) points and (..., K_s) visibility."""

    def __init__(self, name: str, source: str, target: str, weights: np.ndarray, status: str):
        self.name, self.source, self.target, self.status = name, source, target, status
        self.w = weights  # (2, K_t, K_s)
        self.w.flags.writeable = False  # shared: find_mapper hands the same Mapper to every caller

    def __call__(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, dtype=float)
        missing = np.isnan(pts).any(axis=-1).astype(float)  # (..., K_s)
        filled = np.nan_to_num(pts)
        x = filled[..., 0] @ self.w[0].T
        y = filled[..., 1] @ self.w[1].T
        used = (self.w[0] != 0) | (self.w[1] != 0)
        out = np.stack([x, y], axis=-1)
        out[(missing @ used.T.astype(float)) > 0] = np.nan  # any missing contributor -> missing
        return out

    def visibility(self, visible: np.ndarray) -> np.ndarray:
        """A target point is visible only when every contributing source point is."""
        used = ((self.w[0] != 0) | (self.w[1] != 0)).astype(float)
        hidden = (~np.asarray(visible, dtype=bool)).astype(float)
        return (hidden @ used.T) == 0


def _read_json_dir(kind: str) -> list[dict]:
    folder = resources.files("gapkit.schemas") / kind
    return [json.loads(f.read_text()) for f in sorted(folder.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".json")]


@cache
def _registry() -> tuple[dict[str, LandmarkScheme], dict[str, SchemeMapping]]:
    scheme_docs = _read_json_dir("schemes")
    mapping_docs = _read_json_dir("mappings")
    schemes = {d["name"]: LandmarkScheme.model_validate(d) for d in scheme_docs}
    mappings = {d["name"]: SchemeMapping.model_validate(d) for d in mapping_docs}
    for m in mappings.values():
        for end in (m.source, m.target):
            if end not in schemes:
                raise UnknownSchemeError(f"mapping {m.name} names unknown scheme {end!r}")
        if len(m.entries) != schemes[m.target].num_points:
            raise ValueError(f"mapping {m.name} has {len(m.entries)} entries, {m.target} has "
                             f"{schemes[m.target].num_points} points")
        m.weights(schemes[m.source].num_points)  # validates indices
    return schemes, mappings


def scheme_names() -> list[str]:
    return sorted(_registry()[0])


def get_scheme(name: str) -> LandmarkScheme:
    schemes = _registry()[0]
    if name not in schemes:
        raise UnknownSchemeError(f"unknown scheme {name!r}; known: {', '.join(sorted(schemes))}")
    return schemes[name]


def mappings() -> dict[str, SchemeMapping]:
    return dict(_registry()[1])


@cache  # the one mapper cache: every caller shares a pair's Mapper
def find_mapper(source: str, target: str, via: str | None = None) -> Mapper:
    """The mapping from ``source`` to ``target``: identity, a named mapping (``via``),
    or the shortest chain of mappings, composed into one weight matrix."""
    get_scheme(source), get_scheme(target)
    maps = _registry()[1]
    k_s = get_scheme(source).num_points
    if via is not None:
        if via not in maps:
            raise NoMappingError(f"unknown mapping {via!r}; known: {', '.join(sorted(maps))}")
        m = maps[via]
        if (m.source, m.target) != (source, target):
            raise NoMappingError(f"mapping {via} goes {m.source} -> {m.target}, not {source} -> {target}")
        return Mapper(m.name, source, target, m.weights(k_s), m.status)
    if source == target:
        eye = np.eye(k_s)
        return Mapper("identity", source, target, np.stack([eye, eye]), "index")
    # Breadth-first over mappings; among parallel mappings prefer the plain index map.
    rank = {"index": 0, "interpolated": 1, "approximate": 2, "composed": 3}
    edges: dict[str, list[SchemeMapping]] = {}
    for m in sorted(maps.values(), key=lambda m: (rank[m.status], m.name)):
        edges.setdefault(m.source, []).append(m)
    prev: dict[str, SchemeMapping] = {}
    queue, seen = deque([source]), {source}
    while queue:
        node = queue.popleft()
        for m in edges.get(node, []):
            if m.target not in seen:
                seen.add(m.target)
                prev[m.target] = m
                queue.append(m.target)
    if target not in prev:
        raise NoMappingError(f"no deterministic mapping from {source} to {target} "
                             f"(a learned label adapter can bridge them: gapkit adapt fit)")
    chain: list[SchemeMapping] = []
    node = target
    while node != source:
        chain.append(prev[node])
        node = prev[node].source
    chain.reverse()
    w = chain[0].weights(k_s)
    for m in chain[1:]:
        w = np.einsum("atk,aks->ats", m.weights(get_scheme(m.source).num_points), w)
    status = chain[0].status if len(chain) == 1 else "composed"
    return Mapper(" -> ".join(m.name for m in chain), source, target, w, status)
