"""FaceRecord: one face in one image, the single representation every format converts to.

Points are a float array of shape (K, 2) in 0-based pixel (x, y), origin at the top-left
corner of the top-left pixel; NaN marks a missing point. Points may lie outside the image
(synthetic projections do): they are flagged, never clipped. In memory ``image`` is an
absolute path; in a manifest it is written relative to the manifest's folder.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from gapkit.errors import FormatError, GapkitError, InputError, UnknownSchemeError
from gapkit.schemes import LandmarkScheme, get_scheme


def _to_points(value: Any) -> np.ndarray:
    try:
        arr = np.array([[np.nan if v is None else v for v in row] for row in value], dtype=float) \
            if isinstance(value, list) else np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:  # 10**400 in a JSON file overflows a float
        raise ValueError(f"points must be numbers: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"points must have shape (K, 2), got {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError("points contain infinity")
    return arr


def _points_to_json(arr: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in arr.tolist()]


Points = Annotated[
    np.ndarray,
    BeforeValidator(_to_points),
    PlainSerializer(_points_to_json, return_type=list),
    WithJsonSchema({
        "type": "array",
        "description": "K points as [x, y], 0-based pixel coordinates; null for a missing point",
        "items": {"type": "array", "minItems": 2, "maxItems": 2,
                  "items": {"anyOf": [{"type": "number"}, {"type": "null"}]}},
    }),
]


class FaceRecord(BaseModel):
    """One face: image, size, scheme and K points in 0-based pixel (x, y)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    id: str = Field(min_length=1)
    image: str = Field(description="image path; relative to the manifest file, or absolute")
    width: PositiveInt | None = Field(default=None, description="pixels; none: unknown (labels read without the image)")
    height: PositiveInt | None = Field(default=None, description="pixels; none: unknown (labels read without the image)")
    scheme: str
    points: Points
    visible: list[bool] | None = Field(default=None, description="per point; false = occluded/self-occluded")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="face box [x, y, w, h] in 0-based pixels")
    source: str = ""
    split: str = ""
    attributes: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> FaceRecord:
        try:
            k = get_scheme(self.scheme).num_points
        except UnknownSchemeError as exc:
            raise ValueError(str(exc)) from None
        if self.points.shape[0] != k:
            raise ValueError(f"scheme {self.scheme} has {k} points, got {self.points.shape[0]}")
        if self.visible is not None and len(self.visible) != k:
            raise ValueError(f"visible has {len(self.visible)} entries, expected {k}")
        if self.bbox is not None:
            if not all(math.isfinite(v) for v in self.bbox) or self.bbox[2] <= 0 or self.bbox[3] <= 0:
                raise ValueError(f"bbox must be finite [x, y, w, h] with w, h > 0, got {list(self.bbox)}")
        return self

    @property
    def scheme_obj(self) -> LandmarkScheme:
        return get_scheme(self.scheme)

    def outside(self) -> np.ndarray:
        """(K,) bool: the point lies outside the image (NaN points are not outside; nothing is
        outside an image of unknown size)."""
        x, y = self.points[:, 0], self.points[:, 1]
        if self.width is None or self.height is None:
            return np.zeros(len(x), bool)
        with np.errstate(invalid="ignore"):
            return (x < 0) | (y < 0) | (x > self.width) | (y > self.height)

    def landmark_box(self) -> tuple[float, float, float, float]:
        """[x, y, w, h] of the present points."""
        lo, hi = np.nanmin(self.points, axis=0), np.nanmax(self.points, axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])

    def to_json(self, manifest_dir: Path | None = None) -> str:
        d = self.model_dump(mode="json", exclude_none=True)
        if manifest_dir is not None and os.path.isabs(self.image):
            rel = os.path.relpath(self.image, manifest_dir)
            d["image"] = Path(rel).as_posix()
        return json.dumps(d, allow_nan=False, separators=(",", ":"))


def make_record(path: str | Path, line: int | None = None, **fields: Any) -> FaceRecord:
    """Build a record, turning validation failures into a FormatError that names the place."""
    try:
        rec = FaceRecord(**fields)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in exc.errors())
        raise FormatError(path, reasons.replace("Value error, ", ""), line) from None
    reason = geometry_problem(rec)
    if reason:
        raise FormatError(path, reason, line)
    return rec


def geometry_problem(rec: FaceRecord) -> str | None:
    """Catch swapped axes and mirrored shapes, which pass every per-number check.

    A transposed (row, col) shape is a reflection of the face, so the subject's right eye,
    left eye and mouth turn the other way round: the sign of their cross product flips
    under any in-plane rotation. Nearly all points leaving the image, while the swapped
    shape fits, is the other tell.
    """
    pts = rec.points
    if np.isnan(pts).all():
        return "every point is missing (NaN)"
    sign = chirality(pts, rec.scheme_obj)
    if sign is not None and sign < -0.25:
        return ("shape is mirrored: axes look swapped (row, col instead of x, y) or the image was "
                "flipped without permuting the points")
    out = rec.outside()
    present = ~np.isnan(pts).any(axis=1)
    if out[present].mean() > 0.5:
        swapped = (pts[present, 0] <= rec.height).all() and (pts[present, 1] <= rec.width).all() \
            and (pts[present] >= 0).all()
        if swapped:
            return "most points lie outside the image but fit it with x and y swapped: axes look swapped"
    return None


def chirality(points: np.ndarray, scheme: LandmarkScheme) -> float | None:
    """Normalised cross product of (right eye -> left eye) and (eye midpoint -> mouth).

    About +1 for an upright or rotated face in image coordinates (y down), -1 for a
    mirrored or transposed one, near 0 in full profile. None when the scheme has no
    orientation groups or the points are missing.
    """
    if not scheme.orientation:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN group -> NaN, handled below
        c = {k: np.nanmean(points[scheme.groups[g]], axis=0) for k, g in scheme.orientation.items()}
    if any(np.isnan(v).any() for v in c.values()):
        return None
    e = c["left_eye"] - c["right_eye"]
    m = c["mouth"] - (c["left_eye"] + c["right_eye"]) / 2
    denom = np.linalg.norm(e) * np.linalg.norm(m)
    if denom < 1e-9:
        return None
    return float((e[0] * m[1] - e[1] * m[0]) / denom)


def one_scheme(records: Sequence[FaceRecord], side: str, error: type[GapkitError] = InputError) -> str:
    """The scheme every one of ``records`` is in; ``error`` (naming ``side``) when they mix schemes."""
    schemes = sorted({r.scheme for r in records})
    if len(schemes) != 1:
        raise error(f"{side} records mix schemes ({', '.join(schemes) or 'none'}); convert them to one scheme first")
    return schemes[0]


def json_schema() -> dict:
    """The FaceRecord JSON Schema, as exported to schemas/face_record.schema.json."""
    schema = FaceRecord.model_json_schema()
    schema["$comment"] = "Generated by gapkit.records.json_schema(); one manifest line is one FaceRecord."
    return schema


if __name__ == "__main__":  # regenerate schemas/face_record.schema.json
    print(json.dumps(json_schema(), indent=2))
