"""COFW (Burgos-Artizzu et al., ICCV 2013) and COFW-68 (Ghiasi & Fowlkes 2015) MATLAB files.

- **COFW**: ``COFW_train[_color].mat`` / ``COFW_test[_color].mat`` hold the images themselves
  (cell arrays ``IsTr`` / ``IsT``), the labels (``phisTr`` / ``phisT``, N x 87: 29 x, 29 y,
  29 occlusion flags with 1 = occluded) and face boxes (``bboxesTr`` / ``bboxesT``, N x 4:
  x, y, w, h). Read as ``cofw29``.
- **COFW-68**: the 507 test faces re-labelled with the 300-W points, one ``<i>_points.mat``
  per face (``Points``: 68 x 2 x y; ``Occ``: 1 x 68, 1 = occluded), boxes in
  ``cofw68_test_bboxes.mat`` (``bboxes``, 507 x 4: x, y, w, h) in the same folder or the one
  above. Read as ``ibug68``. No images: they are the COFW test images.

Coordinates are 1-based (Matlab: the centre of the top-left pixel is (1, 1)); records are
0-based, so 1 is subtracted from x, y and the box corner. Occlusion flags become ``visible``
(flag 0 = visible).

Record ids are ``cofw_<split>/NNNN``, NNNN the 1-based index in the .mat (``IsT{NNNN}``): a
COFW test face and its COFW-68 labels share an id, so the two label sets pair by id.

The pixels live inside the .mat, so reading asks where they go:

- ``-O images=DIR``: each face's image is written once as ``DIR/<id>.png`` (a PNG already
  there with the same size is kept, never rewritten; one of another size is a problem) and
  the record points at it. COFW-68 records point at the same files without writing: export
  the COFW test .mat into DIR first.
- ``--no-images`` (labels only): nothing is written or opened; ``image`` names the face
  inside its file, ``/abs/COFW_test_color.mat#NNNN`` (the Matlab index), or for COFW-68
  ``COFW_test_color.mat#NNNN``, the release file that holds the pixels (not beside the labels).
  With ``-O images=DIR`` it names ``DIR/<id>.png`` instead.
- neither: the job stops and says so.

The colour release files are usually MATLAB v7.3 (HDF5), which scipy cannot read: they
give a problem that says so (see :mod:`gapkit.formats.matfile`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gapkit.errors import ConfigError, FormatError, Problem
from gapkit.formats.common import FormatInfo, absolute, guarded
from gapkit.formats.matfile import load_mat, mat_names, numeric
from gapkit.formats.pts import utf8_name
from gapkit.images import image_size
from gapkit.records import FaceRecord, make_record

INFO = FormatInfo(
    name="cofw", about="COFW .mat files (IsT/phisT: 29 points, images inside, 1-based) and COFW-68 "
                       "<i>_points.mat files (68 points); -O images=DIR writes the images out as PNG",
    looks_for="COFW .mat files (IsTr/phisTr or IsT/phisT) or COFW-68 *_points.mat files",
    files=("_points.mat", "COFW_train.mat", "COFW_test.mat", "COFW_train_color.mat", "COFW_test_color.mat"),
    folder=("*_points.mat", "COFW_*.mat"),
    stores=frozenset({"visibility", "bbox", "split"}),
    read_options={"images": "folder for the faces' images as DIR/<id>.png: written there once from a COFW "
                            ".mat, looked up there for COFW-68 (needed unless --no-images)"},
    # before aflw2000, whose files claim any other .mat; after every layout older than both
    splits=("train", "test"), detect_rank=54, labels_only=True)

# phis key -> (split, images key, boxes key)
PARTS = {"phisTr": ("train", "IsTr", "bboxesTr"), "phisT": ("test", "IsT", "bboxesT")}
BOX_FILE = "cofw68_test_bboxes.mat"
RELEASE = "COFW_test_color.mat"  # where COFW-68's pixels are
_POINTS_FILE = re.compile(r"(\d+)_points")


@dataclass(frozen=True)
class _Part:
    """One labelled set inside a COFW .mat (train or test)."""

    split: str
    phis_key: str
    phis: np.ndarray            # (N, 87)
    boxes: np.ndarray | None    # (N, 4) or None
    images: np.ndarray | None   # (N,) object array of pixel arrays; None when labels only


def read(src: str | Path, images: str | Path | None = None,
         labels_only: bool = False) -> Iterator[FaceRecord | Problem]:
    """COFW faces from one .mat file or a folder of them (searched recursively)."""
    if images is None and not labels_only:
        raise ConfigError("COFW keeps its images inside the .mat (COFW-68 has none): pass -O images=DIR to "
                          "write them there as PNG once (or find them there), or --no-images for the labels only")
    out = Path(absolute(str(images))) if images is not None else None
    root = Path(src)
    files = [root] if root.is_file() else sorted(root.rglob("*.mat"), key=_order)
    boxes: dict[Path, np.ndarray | None] = {}
    for f in files:
        if f.name == BOX_FILE and f != root:
            continue  # read with the faces that use it, its problems named once there
        kind = guarded(f, None, _kind, f)
        if isinstance(kind, Problem):
            yield kind
        elif kind == "cofw":
            yield from _read_cofw(f, out, labels_only)
        elif kind == "cofw68":
            box_file = _box_file(f)
            if box_file is not None and box_file not in boxes:
                loaded = guarded(box_file, None, _load_boxes, box_file)
                boxes[box_file] = None if isinstance(loaded, Problem) else loaded
                if isinstance(loaded, Problem):
                    yield loaded  # the faces are still read, without boxes
            yield guarded(f, None, _cofw68, f, box_file, boxes.get(box_file), out, labels_only)
        elif root.is_file():
            yield Problem(str(f), None, "holds only COFW-68 face boxes; read the *_points.mat files beside it")


def _order(p: Path) -> tuple:
    """COFW-68's 1_points, 2_points, ... 10_points in number order, then the other files."""
    m = _POINTS_FILE.fullmatch(p.stem)
    return (str(p.parent), 0, int(m.group(1)), "") if m else (str(p.parent), 1, 0, p.name)


def _kind(f: Path) -> str:
    utf8_name(f)  # ids and image references are made from it
    names = mat_names(f)
    if "Points" in names:
        return "cofw68"
    if any(k in names for k in PARTS):
        return "cofw"
    if "bboxes" in names:
        return "boxes"
    raise FormatError(f, f"not a COFW .mat: it holds {', '.join(names) or 'nothing'}; expected phisTr or "
                         "phisT (COFW), or Points and Occ (COFW-68)")


# ---- COFW: many faces per file ------------------------------------------------------------

def _read_cofw(f: Path, out: Path | None, labels_only: bool) -> Iterator[FaceRecord | Problem]:
    parts = guarded(f, None, _load_parts, f, labels_only)
    if isinstance(parts, Problem):
        yield parts
        return
    for part in parts:
        for i0 in range(len(part.phis)):
            yield guarded(f, i0, _face, f, i0, part, out, labels_only)


def _load_parts(f: Path, labels_only: bool) -> list[_Part]:
    names = mat_names(f)
    parts = []
    for phis_key, (split, img_key, box_key) in PARTS.items():
        if phis_key not in names:
            continue
        if not labels_only and img_key not in names:
            raise FormatError(f, f"no {img_key} (the images) beside {phis_key}; read it with --no-images")
        wanted = [phis_key] + [k for k in (box_key,) if k in names] + ([] if labels_only else [img_key])
        mat = load_mat(f, wanted)
        phis = numeric(mat[phis_key], f, phis_key, (None, 87))
        boxes = numeric(mat[box_key], f, box_key, (len(phis), 4)) if box_key in mat else None
        parts.append(_Part(split, phis_key, phis, boxes, None if labels_only else _cells(mat[img_key], f, img_key,
                                                                                         len(phis))))
    return parts


def _cells(value, f: Path, key: str, n: int) -> np.ndarray:
    """A Matlab cell array (N x 1 or 1 x N) as a flat object array of N entries."""
    arr = np.asarray(value)
    if arr.dtype != object:
        raise FormatError(f, f"{key} must be a cell array of images, got a MATLAB {arr.dtype} array")
    if arr.size != n:
        raise FormatError(f, f"{key} holds {arr.size} images but the labels {n} faces")
    return arr.ravel()


def _face(f: Path, i0: int, part: _Part, out: Path | None, labels_only: bool) -> FaceRecord:
    rid = f"cofw_{part.split}/{i0 + 1:04d}"
    try:
        row = part.phis[i0]
        pts = _points(np.stack([row[:29], row[29:58]], axis=1), f, part.phis_key)
        visible = _flags(row[58:], f, part.phis_key)
        bbox = _bbox(part.boxes[i0]) if part.boxes is not None else None
        if labels_only:
            image, w, h = str(out / f"{rid}.png") if out else f"{absolute(f)}#{i0 + 1}", None, None
        else:
            image, w, h = _export(part.images[i0], out / f"{rid}.png", f)
        return make_record(f, i0, id=rid, image=image, width=w, height=h, scheme="cofw29", points=pts,
                           visible=visible, bbox=bbox, source="cofw", split=part.split)
    except FormatError as exc:
        where = "" if exc.path == str(f) else f"{exc.path}: "
        raise FormatError(f, f"face {i0} (id {rid}): {where}{exc.reason}", i0) from None


def _export(pixels, dest: Path, f: Path) -> tuple[str, int, int]:
    """Write one face's pixels as ``dest`` (PNG) unless a PNG of that size is already there."""
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or arr.ndim == 3 and arr.shape[2] in (1, 3)) or not arr.size:
        raise FormatError(f, f"the image is not 8-bit grey or RGB pixels (MATLAB {arr.dtype}, shape "
                             f"{' x '.join(map(str, arr.shape))})")
    h, w = arr.shape[:2]
    if dest.exists():
        have = image_size(dest)
        if have != (w, h):
            raise FormatError(dest, f"exists and is not this face's image ({have[0]}x{have[1]}, the .mat holds "
                                    f"{w}x{h}); remove it or choose another -O images folder")
        return str(dest), w, h
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:  # beside dest first, then one rename: a PNG is never half there
        Image.fromarray(arr[:, :, 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(tmp, format="PNG")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return str(dest), w, h


# ---- COFW-68: one face per file ------------------------------------------------------------

def _box_file(f: Path) -> Path | None:
    for folder in (f.parent, f.parent.parent):
        if (folder / BOX_FILE).is_file():
            return folder / BOX_FILE
    return None


def _load_boxes(p: Path) -> np.ndarray:
    mat = load_mat(p, ["bboxes"])
    if "bboxes" not in mat:
        raise FormatError(p, "no bboxes in this .mat")
    return numeric(mat["bboxes"], p, "bboxes", (None, 4))


def _cofw68(f: Path, box_file: Path | None, boxes: np.ndarray | None, out: Path | None,
            labels_only: bool) -> FaceRecord:
    mat = load_mat(f, ["Points", "Occ"])
    pts = _points(numeric(mat["Points"], f, "Points", (68, 2)), f, "Points")
    visible = _flags(numeric(mat["Occ"], f, "Occ", (1, 68))[0], f, "Occ") if "Occ" in mat else None
    m = _POINTS_FILE.fullmatch(f.stem)
    index = int(m.group(1)) if m else None
    rid = f"cofw_test/{index:04d}" if index else f"cofw68/{f.stem}"
    bbox = None
    if boxes is not None and index:
        if index > len(boxes):
            raise FormatError(f, f"{box_file} has no box {index} (it has {len(boxes)})")
        bbox = _bbox(boxes[index - 1])
    image = str(out / f"{rid}.png") if out else f"{RELEASE}#{index or f.stem}"
    w = h = None
    if not labels_only:
        if not Path(image).is_file():
            raise FormatError(f, f"no image {image}: write the COFW test images there first "
                                 f"(gapkit convert {RELEASE} OUT -O images={out})")
        w, h = image_size(image)
    return make_record(f, None, id=rid, image=image, width=w, height=h, scheme="ibug68", points=pts,
                       visible=visible, bbox=bbox, source="cofw68", split="test")


# ---- shared checks --------------------------------------------------------------------------

def _points(xy: np.ndarray, f: Path, key: str) -> np.ndarray:
    """(K, 2) 1-based file points as 0-based, refusing a non-finite one by number."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        k = int(np.argmax(bad))
        raise FormatError(f, f"{key}: point {k + 1} is not finite ({xy[k, 0]}, {xy[k, 1]})")
    return xy - 1.0


def _flags(occ: np.ndarray, f: Path, key: str) -> list[bool]:
    """Occlusion flags (1 = occluded) as visibility."""
    bad = ~np.isin(occ, (0, 1))
    if bad.any():
        k = int(np.argmax(bad))
        raise FormatError(f, f"{key}: occlusion flag {k + 1} must be 0 or 1, got {occ[k]}")
    return (occ == 0).tolist()


def _bbox(b: np.ndarray) -> tuple[float, float, float, float]:
    """A 1-based Matlab [x, y, w, h] box as 0-based."""
    return float(b[0]) - 1.0, float(b[1]) - 1.0, float(b[2]), float(b[3])
