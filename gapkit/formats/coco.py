"""COCO keypoints JSON: ``images``, ``annotations[].keypoints = [x1, y1, v1, ...]``.

Also COCO-WholeBody (``face_kpts``, 68 iBUG points). Coordinates are 0-based pixels.
Visibility: v=0 not labelled (NaN), v=1 labelled but hidden, v=2 visible. Files that
flag every labelled point 1 (mmpose's face sets do) carry no occlusion information:
``visible`` stays unset and the writer restores the same flag. Writing keeps the
gapkit id, source, split and attributes in an extra ``gapkit`` field, so a round
trip through COCO is lossless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import ConfigError, FormatError, Problem
from gapkit.files import atomic_open, check_output
from gapkit.formats.common import FormatInfo, absolute, scheme_for
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="coco", about="COCO keypoints JSON (and COCO-WholeBody face_kpts), 0-based",
    looks_for="a COCO keypoints .json file", files=(".json",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "attributes", "any_scheme"}),
    read_options={"images": "image folder (default: the JSON's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "part": "auto | face | keypoints: which key points to read (default auto)"}, detect_rank=70)



def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         part: str = "auto") -> Iterator[FaceRecord | Problem]:
    """``part``: "auto" (face_kpts when present, else keypoints), "face" or "keypoints"."""
    path = Path(src)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        yield Problem(str(path), exc.lineno, f"not valid JSON: {exc.msg}")
        return
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        yield Problem(str(path), None, f"cannot read: {type(exc).__name__}: {exc}")
        return
    if part not in ("auto", "face", "keypoints"):
        raise ConfigError(f"-O part must be auto, face or keypoints, got {part!r}")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        yield Problem(str(path), None, "not a COCO file: needs 'images' and 'annotations' lists")
        return
    root = Path(images) if images else path.parent
    imgs = {im.get("id"): im for im in doc["images"] if isinstance(im, dict)}
    for n, ann in enumerate(doc["annotations"]):
        try:
            yield _record(path, n, ann, imgs, root, scheme, part)
        except FormatError as exc:
            yield exc.problem()


def _record(path: Path, n: int, ann: dict, imgs: dict, root: Path, scheme: str | None, part: str) -> FaceRecord:
    where = f"annotations[{n}]"
    if not isinstance(ann, dict):
        raise FormatError(path, f"{where} is not an object")
    key = "face_kpts" if part == "face" or (part == "auto" and "face_kpts" in ann) else "keypoints"
    kps = ann.get(key)
    if not isinstance(kps, list) or len(kps) % 3 or not kps:
        raise FormatError(path, f"{where}.{key} must be a non-empty list of x, y, v triples")
    try:
        arr = np.array(kps, dtype=float).reshape(-1, 3)
    except (TypeError, ValueError):
        raise FormatError(path, f"{where}.{key} holds a non-number") from None
    if not np.isfinite(arr).all():
        raise FormatError(path, f"{where}.{key} holds a non-finite value")
    if key == "face_kpts" and not arr.any():
        raise FormatError(path, f"{where} has no face key points (all zero)")
    im = imgs.get(ann.get("image_id"))
    if im is None:
        raise FormatError(path, f"{where}: image_id {ann.get('image_id')!r} is not in images")
    img = root / im["file_name"]
    w, h = image_size(img)
    if im.get("width") and im.get("height") and (im["width"], im["height"]) != (w, h):
        raise FormatError(path, f"{where}: images entry says {im['width']}x{im['height']}, "
                                f"the file is {w}x{h}")
    v = arr[:, 2]
    pts = arr[:, :2].copy()
    pts[v == 0] = np.nan
    extra = ann.get("gapkit") or {}
    attrs = dict(extra.get("attributes", {}))
    if "visible" in extra:  # written by gapkit: says whether visibility was known
        visible = (v == 2).tolist() if extra["visible"] else None
    elif (v == 2).any():
        visible = (v == 2).tolist()
    else:
        visible = None
        if (v == 1).any():
            attrs.setdefault("coco_labelled_flag", 1)
    for k in ("center", "scale", "box_size"):
        if k in ann and k not in attrs:
            attrs[k] = ann[k]
    bbox = ann.get("face_box" if key == "face_kpts" else "bbox")
    rec_id = extra.get("id") or f"{Path(im['file_name']).with_suffix('').as_posix()}#{ann.get('id', n)}"
    return make_record(path, None, id=rec_id, image=absolute(img), width=w, height=h,
                       scheme=extra.get("scheme") or scheme_for(len(pts), path, explicit=scheme),
                       points=pts, visible=visible, bbox=tuple(bbox) if bbox else None,
                       source=extra.get("source", "coco"), split=extra.get("split", ""), attributes=attrs)


def write(records: Iterable[FaceRecord], out: str | Path, overwrite: bool = False) -> Iterator[FaceRecord | Problem]:
    """One COCO JSON; image paths are written relative to its folder."""
    out = Path(out)
    check_output(out, overwrite)
    images: dict[str, dict] = {}
    anns = []
    for rec in records:
        img_key = rec.image
        if img_key not in images:
            rel = Path(rec.image)
            try:
                rel = rel.relative_to(absolute(out.parent))
            except ValueError:
                pass
            images[img_key] = {"id": len(images) + 1, "file_name": rel.as_posix(), "width": rec.width,
                               "height": rec.height}
        missing = np.isnan(rec.points).any(axis=1)
        if rec.visible is not None:
            v = np.where(rec.visible, 2, 1)
        else:
            v = np.full(len(rec.points), rec.attributes.get("coco_labelled_flag", 2))
        v = np.where(missing, 0, v)
        xy = np.nan_to_num(rec.points)
        flat = np.column_stack([xy, v]).ravel().tolist()
        attrs = {k: val for k, val in rec.attributes.items() if k != "coco_labelled_flag"}
        extra = {"id": rec.id, "scheme": rec.scheme, "source": rec.source, "split": rec.split,
                 "attributes": attrs, "visible": rec.visible is not None}
        ann = {"id": len(anns) + 1, "image_id": images[img_key]["id"], "category_id": 1,
               "keypoints": [int(t) if i % 3 == 2 else t for i, t in enumerate(flat)],
               "num_keypoints": int((~missing).sum()), "iscrowd": 0, "gapkit": extra}
        if rec.bbox is not None:
            ann["bbox"] = list(rec.bbox)
            ann["area"] = rec.bbox[2] * rec.bbox[3]
        anns.append(ann)
        yield rec
    doc = {"images": list(images.values()), "annotations": anns,
           "categories": [{"id": 1, "name": "face", "supercategory": "person", "keypoints": [], "skeleton": []}]}
    with atomic_open(out, "w", overwrite=overwrite) as f:
        json.dump(doc, f, allow_nan=False)
