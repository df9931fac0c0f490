"""COCO keypoints JSON: ``images``, ``annotations[].keypoints = [x1, y1, v1, ...]``.

Also COCO-WholeBody (``face_kpts``, 68 iBUG points). Coordinates are 0-based pixels, as COCO
stores them; nothing is shifted. Visibility: v=0 not labelled (NaN), v=1 labelled but hidden,
v=2 visible. Files that flag every labelled point 1 (mmpose's face sets do) carry no occlusion
information: ``visible`` stays unset, ``attributes.coco_labelled_flag`` remembers the 1 and the
writer restores it, so the flags survive any number of round trips. Writing keeps the gapkit
id, source, split and attributes in an extra ``gapkit`` field, so a round trip through COCO is
lossless.

A person that holds no face (COCO-WholeBody ``face_valid: false``, ``num_keypoints: 0``, key
points all zero) is skipped as "not a face": counted, not an error (mmpose filters the same
way). A problem in one annotation names it by 0-based index (the Problem's ``line``) and id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import ConfigError, FormatError, Problem, clip
from gapkit.files import atomic_open, check_output
from gapkit.formats.common import FormatInfo, absolute, checked_size, guarded, one_file, scheme_for
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="coco", about="COCO keypoints JSON (and COCO-WholeBody face_kpts), 0-based",
    looks_for="a COCO keypoints .json file", files=(".json",),
    stores=frozenset({"missing", "visibility", "bbox", "split", "attributes", "any_scheme"}),
    read_options={"images": "image folder (default: the JSON's folder)",
                  "scheme": "scheme name when the point count is ambiguous",
                  "part": "auto | face | keypoints: which key points to read (default auto)"}, detect_rank=70,
    labels_only=True)


def read(src: str | Path, images: str | Path | None = None, scheme: str | None = None,
         part: str = "auto", labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """``part``: "auto" (face_kpts when present, else keypoints), "face" or "keypoints".
    ``labels_only``: no image is opened; width and height come from ``images[]`` when given."""
    path = Path(src)
    one_file(path, INFO)
    if part not in ("auto", "face", "keypoints"):
        raise ConfigError(f"-O part must be auto, face or keypoints, got {part!r}")
    doc = _load(path)
    if isinstance(doc, Problem):
        yield doc
        return
    root = Path(images) if images else path.parent
    imgs = _images_by_id(doc["images"])
    for n, ann in enumerate(doc["annotations"]):
        got = guarded(path, n, _record, path, n, ann, imgs, root, scheme, part, labels_only)
        yield _named(got, path, n, ann)


def _load(path: Path) -> dict | Problem:
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        return Problem(str(path), exc.lineno, f"not valid JSON: {exc.msg}")
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        return Problem(str(path), None, f"cannot read: {type(exc).__name__}: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        return Problem(str(path), None, "not a COCO file: needs 'images' and 'annotations' lists")
    return doc


def _images_by_id(entries: list) -> dict:
    """images[] by id; an entry that is no object or has no usable id cannot be referred to,
    so the annotations that name it say so."""
    return {im["id"]: im for im in entries
            if isinstance(im, dict) and not isinstance(im.get("id"), dict | list | type(None))}


def _named(got: FaceRecord | Problem, path: Path, n: int, ann) -> FaceRecord | Problem:
    """The annotation's index as the problem's line, and its index and id in the reason (an image
    that fails is named in the reason too). A not-a-face entry keeps its short reason: the report
    counts those by reason."""
    if isinstance(got, FaceRecord):
        return got
    if got.kind == "not_a_face":
        return Problem(str(path), n, got.reason, got.kind)
    where = f"annotation {n}"
    if isinstance(ann, dict) and "id" in ann:
        where += f" (id {clip(repr(ann['id']), 40)})"
    other = f"{got.path}: " if got.path != str(path) else ""
    return Problem(str(path), n, f"{where}: {other}{got.reason}", got.kind, got.detail)


def _record(path: Path, n: int, ann, imgs: dict, root: Path, scheme: str | None, part: str,
            labels_only: bool) -> FaceRecord | Problem:
    if not isinstance(ann, dict):
        raise FormatError(path, f"is a {type(ann).__name__}, not an object")
    key = "face_kpts" if part == "face" or (part == "auto" and "face_kpts" in ann) else "keypoints"
    no_face = _no_face(ann, key)
    if no_face:
        return Problem(str(path), None, no_face, kind="not_a_face")
    arr = _keypoints(path, ann, key)
    if not arr.any():  # COCO writes an unlabelled person as all zeros
        return Problem(str(path), None, f"COCO person without {key} (all zero)", kind="not_a_face")
    extra = {} if ann.get("gapkit") is None else ann["gapkit"]
    if not isinstance(extra, dict):
        raise FormatError(path, f"the gapkit field must be an object, got a {type(extra).__name__}")
    attrs = {} if extra.get("attributes") is None else extra["attributes"]
    if not isinstance(attrs, dict):
        raise FormatError(path, f"gapkit.attributes must be an object, got a {type(attrs).__name__}")
    attrs = dict(attrs)
    name, im = _image_entry(path, ann, imgs)
    img = root / name
    w, h = _size(path, im)
    if not labels_only:
        w, h = checked_size(path, None, img, w, h)
    v = arr[:, 2]
    pts = arr[:, :2].copy()
    pts[v == 0] = np.nan
    visible = _visibility(v, extra, attrs)
    for k in ("center", "scale", "box_size"):
        if k in ann and k not in attrs:
            attrs[k] = ann[k]
    bbox = _bbox(path, ann.get("face_box" if key == "face_kpts" else "bbox"))
    rec_id = extra.get("id") or f"{_stem(name)}#{ann.get('id', n)}"
    return make_record(path, None, id=rec_id, image=absolute(img), width=w, height=h,
                       scheme=extra.get("scheme") or scheme_for(len(pts), path, explicit=scheme),
                       points=pts, visible=visible, bbox=bbox,
                       source=extra.get("source", "coco"), split=extra.get("split", ""), attributes=attrs)


def _no_face(ann: dict, key: str) -> str | None:
    """Why this person holds no face to read, or None. mmpose drops WholeBody persons with
    face_valid false; COCO's num_keypoints 0 is a person with nothing labelled."""
    if key == "face_kpts" and ann.get("face_valid", True) is False:
        return "COCO-WholeBody person without a face (face_valid false)"
    if key == "keypoints" and ann.get("num_keypoints") == 0:
        return "COCO person with no labelled key point (num_keypoints 0)"
    return None


def _keypoints(path: Path, ann: dict, key: str) -> np.ndarray:
    kps = ann.get(key)
    if not isinstance(kps, list) or len(kps) % 3 or not kps:
        raise FormatError(path, f"{key} must be a non-empty list of x, y, v triples")
    try:
        arr = np.array(kps, dtype=float).reshape(-1, 3)
    except (TypeError, ValueError):
        raise FormatError(path, f"{key} holds a non-number") from None
    if not np.isfinite(arr).all():
        raise FormatError(path, f"{key} holds a non-finite value")
    return arr


def _image_entry(path: Path, ann: dict, imgs: dict) -> tuple[str, dict]:
    """(file_name, images[] entry) of the annotation's image."""
    image_id = ann.get("image_id")
    if isinstance(image_id, dict | list) or image_id not in imgs:
        raise FormatError(path, f"image_id {clip(repr(image_id), 40)} is not in images")
    im = imgs[image_id]
    name = im.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise FormatError(path, f"images entry {clip(repr(image_id), 40)} has no file_name")
    return name, im


def _size(path: Path, im: dict) -> tuple[int | None, int | None]:
    """The images[] entry's (width, height); None where it gives none. 640.0 is 640 pixels."""
    size = []
    for side in ("width", "height"):
        value = im.get(side)
        if value is None:
            size.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
                or not float(value).is_integer():
            raise FormatError(path, f"images entry {side} {clip(repr(value), 40)} is not a whole number of pixels")
        size.append(int(value))
    return size[0], size[1]


def _visibility(v: np.ndarray, extra: dict, attrs: dict) -> list[bool] | None:
    """Per-point visibility, or None when the file carries no occlusion information. A gapkit
    file says which; one flag for every labelled point then is the flag to write back."""
    labelled = set(v[v > 0].tolist())
    known = bool(extra["visible"]) if "visible" in extra and len(labelled) <= 1 else 2 in labelled
    if known:
        return (v == 2).tolist()
    if 1 in labelled:
        attrs["coco_labelled_flag"] = 1
    return None


def _bbox(path: Path, box) -> tuple[float, ...] | None:
    if box is None or box == []:
        return None
    if not isinstance(box, list) or len(box) != 4 \
            or not all(isinstance(t, int | float) and not isinstance(t, bool) for t in box):
        raise FormatError(path, f"box must be [x, y, w, h] numbers, got {clip(repr(box), 60)}")
    return tuple(float(t) for t in box)


def _stem(name: str) -> str:
    p = Path(name)
    return p.with_suffix("").as_posix() if p.name else p.as_posix()


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
