"""Datagen (DGFaces) datapoints, key points JSON version 2.

Each datapoint folder holds one or more camera folders with ``key_points/``:
``face_standard_key_points.json`` (68 iBUG-order points, keys "01".."68") and
``face_dense_key_points.json`` (468 MediaPipe-topology points, keys "0".."467").
**``pixel_2d.x`` is the ROW and ``pixel_2d.y`` the COLUMN**; so are the face box's
min_x/max_x. ``is_visible`` is the string "true"/"false". Points are projections of
3-D surface points, hence the ``datagen68`` scheme (projected semantics) for the 68; a camera
that sees none of them (one behind the head) holds no face and is skipped as such.
After the swap, points are 0-based pixel (x, y) as gapkit holds them.

With ``labels_only`` the render is not opened: the size comes from ``camera_metadata.json``'s
``resolution_px`` when the image is square (which of its x, y is the width is not verified on
a non-square render), else it is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapkit.errors import ConfigError, FormatError, Problem
from gapkit.formats.common import FormatInfo, absolute, guarded
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="datagen", about="Datagen DGFaces datapoints (key_points JSON v2; pixel_2d x is the row)",
    looks_for="datapoint folders with */key_points/", folder=("key_points",),
    stores=frozenset({"visibility", "bbox", "attributes"}),
    read_options={"keypoints": "standard (68 points) | dense (468 points); default standard"}, detect_rank=30,
    labels_only=True)


KEYPOINT_FILES = {"standard": ("face_standard_key_points.json", "standard", "datagen68"),
                  "dense": ("face_dense_key_points.json", "dense", "mediapipe468")}


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise FormatError(path, "file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise FormatError(path, f"not valid JSON: {exc.msg}", exc.lineno) from None
    except RecursionError:
        raise FormatError(path, "JSON nested too deeply") from None


def _load_object(path: Path) -> dict:
    """A JSON file that must hold one object (a list or a string there is the file's problem)."""
    doc = _load_json(path)
    if not isinstance(doc, dict):
        raise FormatError(path, f"must hold a JSON object, not {_json_type(doc)}")
    return doc


def _json_type(value: object) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def parse_keypoints(path: Path, group: str) -> tuple[np.ndarray, list[bool]]:
    doc = _load_object(path)
    try:
        points = doc["face"][group]
    except (KeyError, TypeError):
        raise FormatError(path, f"no face.{group} key points in file") from None
    if not isinstance(points, dict) or not points:
        raise FormatError(path, f"face.{group} is empty or not an object")
    try:
        keys = sorted(points, key=int)
    except ValueError:
        raise FormatError(path, "key point names must be numbers") from None
    first = int(keys[0])
    if [int(k) for k in keys] != list(range(first, first + len(keys))):
        raise FormatError(path, f"key point numbers are not contiguous ({keys[0]}..{keys[-1]}, {len(keys)} keys)")
    pts = np.empty((len(keys), 2))
    vis = []
    for i, k in enumerate(keys):
        p = points[k]
        try:
            row, col = float(p["pixel_2d"]["x"]), float(p["pixel_2d"]["y"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(path, f"key point {k}: missing or non-numeric pixel_2d") from None
        if not (np.isfinite(row) and np.isfinite(col)):
            raise FormatError(path, f"key point {k}: non-finite pixel_2d")
        pts[i] = col, row  # Datagen stores (row, col) under the names (x, y)
        v = p.get("is_visible")
        if v not in ("true", "false", True, False):
            raise FormatError(path, f"key point {k}: is_visible must be 'true' or 'false', got {v!r}")
        vis.append(v in ("true", True))
    return pts, vis


def _camera_dirs(datapoint: Path) -> list[Path]:
    return sorted(p.parent for p in datapoint.glob("*/key_points"))


def read(src: str | Path, keypoints: str = "standard", labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """Stream records from a folder of datapoints (or one datapoint folder)."""
    if keypoints not in KEYPOINT_FILES:
        raise ConfigError(f"-O keypoints must be one of {', '.join(KEYPOINT_FILES)}")
    fname, group, scheme = KEYPOINT_FILES[keypoints]
    root = Path(src)
    # A datapoint is the folder two levels above each key_points/ folder.
    datapoints = sorted({kp.parent.parent for kp in root.rglob("key_points") if kp.is_dir()})
    for dp in datapoints:
        cams = _camera_dirs(dp)
        for cam in cams:
            yield guarded(cam / "key_points" / fname, None, _record, dp, cam, fname, group, scheme,
                          len(cams) > 1, labels_only)


def _environment(cam: Path) -> tuple[str, dict]:
    """(image name, attributes) from the camera's environment.json, when there is one."""
    image_name, attrs = "visible_spectrum_01.png", {"camera": cam.name}
    env_path = cam / "environment.json"
    if not env_path.exists():
        return image_name, attrs
    envs = _load_object(env_path).get("environments") or [{}]
    if not isinstance(envs, list) or not isinstance(envs[0], dict):
        raise FormatError(env_path, "environments must be a list of objects")
    image_name = envs[0].get("image_name", image_name)
    if not isinstance(image_name, str) or not image_name.strip():
        raise FormatError(env_path, f"image_name must be a file name, got {image_name!r}"[:120])
    attrs.update({k: v for k, v in envs[0].items() if k != "image_name"})
    return image_name, attrs


def _actor(dp: Path) -> dict:
    """Expression and identity from the datapoint's actor_metadata.json, when there is one."""
    actor = dp / "actor_metadata.json"
    if not actor.exists():
        return {}
    meta = _load_object(actor)
    expr = meta.get("face_expression") or {}
    if not isinstance(expr, dict):
        raise FormatError(actor, f"face_expression must be an object, not {_json_type(expr)}")
    return {"expression": expr.get("name"), "identity": meta.get("identity_label")}


def _box(cam: Path) -> tuple[float, float, float, float] | None:
    box_path = cam / "face_bounding_box.json"
    if not box_path.exists():
        return None
    b = _load_object(box_path)
    try:  # min_x/max_x are rows, like the key points
        return (float(b["min_y"]), float(b["min_x"]), float(b["max_y"] - b["min_y"]),
                float(b["max_x"] - b["min_x"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError(box_path, "face box needs numbers min_x, min_y, max_x, max_y") from None


def _camera_size(cam: Path) -> tuple[int | None, int | None]:
    """The render's size from camera_metadata.json without opening it: square renders only,
    where the axis naming cannot matter; unknown otherwise (it is optional, so never an error)."""
    try:
        res = json.loads((cam / "camera_metadata.json").read_text(encoding="utf-8-sig"))["resolution_px"]
        x, y = float(res["x"]), float(res["y"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None, None
    if x == y and x.is_integer() and x > 0:
        return int(x), int(y)
    return None, None


def _record(dp: Path, cam: Path, fname: str, group: str, scheme: str, multi: bool,
            labels_only: bool) -> FaceRecord | Problem:
    kp_path = cam / "key_points" / fname
    if not kp_path.exists():
        raise FormatError(kp_path, f"no {fname} in this datapoint")
    pts, vis = parse_keypoints(kp_path, group)
    if not any(vis):  # e.g. a camera behind the head: its projected points are a mirror image
        return Problem(str(kp_path), None, "no key point is visible from this camera", kind="not_a_face")
    image_name, attrs = _environment(cam)
    attrs.update(_actor(dp))
    img = cam / image_name
    w, h = _camera_size(cam) if labels_only else image_size(img)
    rec_id = f"{dp.name}/{cam.name}" if multi else dp.name
    return make_record(kp_path, None, id=rec_id, image=absolute(img), width=w, height=h, scheme=scheme,
                       points=pts, visible=vis, bbox=_box(cam), source="datagen", split="", attributes=attrs)
