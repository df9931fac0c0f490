"""Sample, render and write simulated faces of one domain, in that domain's native format.

- ``synthetic``: clean renders, FaceSynthetics layout (``NNNNNN.png`` + ``NNNNNN_ldmks.txt``,
  70 points, 0-based) with projected 3-D label semantics, wide uniform poses;
- ``real``: photo-like renders, 300-W layout (``NNNNNN.jpg`` + ``NNNNNN.pts``, 68 points,
  1-based) with human label semantics and annotator noise, mostly frontal poses.

Both write ``manifest.jsonl`` whose records also carry the other semantics of the same face
(``attributes.human68`` / ``attributes.projected70``), the pose and the knobs. Sample ``i``
depends only on (seed, domain, i), so output is the same for any number of workers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import ConfigDict, model_validator

from gapkit.errors import ConfigError, GapkitError, Problem
from gapkit.face3d import (
    EXPRESSION_MODES,
    IDENTITY_MODES,
    build_face,
    head_outline,
    human_points3d,
    project,
    visibility,
)
from gapkit.faceset import FaceSet
from gapkit.files import atomic_open, check_output, current_umask
from gapkit.formats import get_format
from gapkit.formats.manifest import write_manifest
from gapkit.records import FaceRecord
from gapkit.settings import Settings
from gapkit.sim.render import background, draw_face, occluders, photo_look

DOMAINS = {"synthetic": 1, "real": 2}
ANNOTATOR_NOISE = 0.015  # of the inter-ocular distance, per point (people's 1-2%)


class SimConfig(Settings):
    model_config = ConfigDict(frozen=True)

    domain: str = "synthetic"
    n: int = 2000
    size: int = 128
    seed: int = 0
    visual_gap: float = 1.0  # 0: the synthetic domain looks real; 1: fully clean renders
    label_gap: float = 1.0   # 0: synthetic labels follow human semantics; 1: fully projected
    max_yaw: float = 60.0
    max_pitch: float = 30.0
    max_roll: float = 30.0
    split: str = ""
    start: int = 0  # index of the first sample (to extend a set without repeating faces)

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown domain {self.domain!r}; use synthetic or real")
        for name in ("visual_gap", "label_gap"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.size < 32 or self.n < 1:
            raise ValueError("--size must be at least 32 and --n at least 1")
        if not (0 <= self.max_yaw <= 80 and 0 <= self.max_pitch <= 45 and 0 <= self.max_roll <= 45):
            raise ValueError("pose range: yaw up to 80, pitch and roll up to 45 degrees")
        return self


@dataclass
class Sample:
    image: np.ndarray      # (size, size, 3) BGR
    points: np.ndarray     # the domain's own labels: (70, 2) synthetic or (68, 2) real
    human68: np.ndarray    # (68, 2) noise-free human semantics
    projected70: np.ndarray  # (70, 2) projected 3-D semantics
    visible: np.ndarray    # (len(points),) bool
    pose: dict


def _pose(rng: np.random.Generator, cfg: SimConfig) -> tuple[float, float, float]:
    if cfg.domain == "synthetic":  # renders cover the pose range evenly
        return (float(rng.uniform(-cfg.max_yaw, cfg.max_yaw)), float(rng.uniform(-0.7, 0.7) * cfg.max_pitch),
                float(rng.uniform(-0.5, 0.5) * cfg.max_roll))
    # Photographs are mostly near-frontal, with a tail.
    return (float(np.clip(rng.normal(0, cfg.max_yaw / 3), -cfg.max_yaw, cfg.max_yaw)),
            float(np.clip(rng.normal(0, cfg.max_pitch / 3.5), -cfg.max_pitch, cfg.max_pitch)),
            float(np.clip(rng.normal(0, cfg.max_roll / 4), -cfg.max_roll, cfg.max_roll)))


def sample(index: int, cfg: SimConfig) -> Sample:
    """Sample ``index`` of this configuration, rendered."""
    rng = np.random.default_rng([cfg.seed, DOMAINS[cfg.domain], index])
    yaw, pitch, roll = _pose(rng, cfg)
    identity = np.clip(rng.normal(0, 1, len(IDENTITY_MODES)), -2.5, 2.5)
    expression = np.abs(rng.normal(0, 0.5, len(EXPRESSION_MODES))) * (rng.random(len(EXPRESSION_MODES)) < 0.5)
    face = build_face(identity, expression, yaw, pitch, roll, cfg.size, scale=rng.uniform(0.85, 1.1),
                      shift=tuple(rng.uniform(-0.06, 0.06, 2)))
    projected = project(face, face.points3d)
    human = project(face, human_points3d(face))
    realism = 1.0 if cfg.domain == "real" else 1.0 - cfg.visual_gap
    seen = visibility(face)
    img = background(cfg.size, rng, busy=rng.random() < realism)
    draw_face(img, face, head_outline(face), projected, seen, rng, realism)
    occ = occluders(img, projected, rng, realism)
    img = photo_look(img, rng, realism)
    if cfg.domain == "synthetic":
        pts = projected.copy()
        pts[:68] = human + cfg.label_gap * (projected[:68] - human)
        vis = seen.copy()
    else:
        iod = float(np.linalg.norm(human[45] - human[36]))
        pts = human + rng.normal(0, ANNOTATOR_NOISE * iod, human.shape)
        vis = seen[:68].copy()
        vis[:17] = True  # people put the jaw on the outline they can see
    inside = np.clip(np.round(pts).astype(int), 0, cfg.size - 1)
    vis &= occ[inside[:, 1], inside[:, 0]] == 0
    pts = np.round(pts, 4)
    return Sample(img, pts, np.round(human, 4), np.round(projected, 4), vis,
                  {"yaw": round(yaw, 3), "pitch": round(pitch, 3), "roll": round(roll, 3)})


def _write_one(i: int, cfg: SimConfig, folder: Path) -> FaceRecord:
    """Render sample ``i`` into ``folder``: the image here, the labels through the domain's
    format writer (so a simulated set is byte for byte what that format's writer makes)."""
    s = sample(i, cfg)
    if cfg.domain == "synthetic":
        fmt, image, scheme, other = "facesynthetics", folder / f"{i:06d}.png", "facesynthetics70", {
            "human68": s.human68.tolist()}
        cv2.imwrite(str(image), s.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        fmt, image, scheme, other = "300w", folder / f"{i:06d}.jpg", "ibug68", {"projected70": s.projected70.tolist()}
        cv2.imwrite(str(image), s.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    rec = FaceRecord(id=f"{i:06d}", image=str(image), width=cfg.size, height=cfg.size, scheme=scheme,
                     points=s.points, visible=s.visible, source=f"gapkit-sim/{cfg.domain}", split=cfg.split,
                     attributes={"domain": cfg.domain, **s.pose, "label_gap": cfg.label_gap,
                                 "visual_gap": cfg.visual_gap, **other})
    for out in get_format(fmt, write=True).write([rec], folder, overwrite=True, images="none"):
        if isinstance(out, Problem):
            raise GapkitError(f"simulated sample {i}: {out}")
    return rec


def human_semantics(faces: FaceSet) -> FaceSet:
    """Simulated faces with human (300-W, ``ibug68``) labels: a synthetic face's own
    ``attributes.human68``, a real one as it is. The pairs an adapter learns the label gap from."""
    out = []
    for r in faces:
        if r.scheme == "ibug68":
            out.append(r)
            continue
        if "human68" not in r.attributes:
            raise ConfigError(f"{r.id}: no attributes.human68; only gapkit's simulated faces carry both "
                              "labellings, in the simulator's manifest.jsonl (not its format files)")
        out.append(r.model_copy(update={"scheme": "ibug68", "points": np.asarray(r.attributes["human68"], float),
                                        "visible": None}))
    return FaceSet(out, "ibug68")


def _write_chunk(args: tuple[list[int], SimConfig, str]) -> list[FaceRecord]:
    idx, cfg, folder = args
    return [_write_one(i, cfg, Path(folder)) for i in idx]


def generate(out: str | Path, cfg: SimConfig, workers: int = 1, overwrite: bool = False,
             progress: Callable[[int], None] | None = None) -> Path:
    """Write ``cfg.n`` samples and ``manifest.jsonl`` into the folder ``out``; returns the manifest.

    Files are written to a temporary folder beside ``out`` first. A new ``out`` is that folder,
    renamed. With ``overwrite`` an existing ``out`` keeps everything it holds that this command
    did not write: each new file replaces its namesake atomically, and of the old files only
    those the previous run listed in its ``SIM.json`` are removed; the manifest comes last.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GapkitError(f"{out} exists and is not a folder")
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)).resolve()
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        indices = list(range(cfg.start, cfg.start + cfg.n))
        chunks = [indices[i:i + 64] for i in range(0, len(indices), 64)]
        records: list[FaceRecord] = []
        if workers <= 1:
            for c in chunks:
                records += _write_chunk((c, cfg, str(tmp)))
                if progress:
                    progress(len(c))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for c, part in zip(chunks, pool.map(_write_chunk, [(c, cfg, str(tmp)) for c in chunks]), strict=True):
                    records += part
                    if progress:
                        progress(len(c))
        write_manifest(records, tmp / "manifest.jsonl")
        files = sorted(f.name for f in tmp.iterdir())
        (tmp / SIM_FILE).write_text(json.dumps({**cfg.model_dump(), "files": [*files, SIM_FILE]}, indent=1) + "\n")
        if not out.exists():
            os.replace(tmp, out)
        else:
            _replace_into(tmp, out, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "manifest.jsonl"


SIM_FILE = "SIM.json"


def _written_before(out: Path) -> set[str]:
    """The files a previous `gapkit sim` wrote into ``out``, as its SIM.json lists them."""
    try:
        listed = json.loads((out / SIM_FILE).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {f for f in listed if isinstance(f, str) and Path(f).name == f}


def _replace_into(tmp: Path, out: Path, files: list[str]) -> None:
    old = _written_before(out)
    last = ("manifest.jsonl", SIM_FILE)  # a reader never sees a manifest naming images not there yet
    for name in [f for f in files if f not in last] + list(last):
        os.replace(tmp / name, out / name)
    for name in sorted(old - set(files) - set(last)):
        (out / name).unlink(missing_ok=True)


def contact_sheet(path: str | Path, cfg: SimConfig, n: int = 8, overwrite: bool = False) -> Path:
    """A grid: one row per domain, ``n`` faces each, drawn at 2x with both label sets
    (red: projected 3-D semantics, green: human semantics)."""
    rows = []
    for domain in DOMAINS:
        tiles = []
        for i in range(n):
            s = sample(i, cfg.model_copy(update={"domain": domain}))
            big = cv2.resize(s.image, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
            for pts, colour in ((s.projected70, (40, 40, 255)), (s.human68, (60, 220, 60))):
                for x, y in pts:
                    cv2.circle(big, (int(round(2 * x + 0.5)), int(round(2 * y + 0.5))), 2, colour, -1, cv2.LINE_AA)
            cv2.putText(big, f"{domain} yaw {s.pose['yaw']:+.0f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(big)
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    ok, buf = cv2.imencode(".png", sheet)
    with atomic_open(path, "wb", overwrite=overwrite) as f:
        f.write(buf.tobytes())
    return Path(path)
