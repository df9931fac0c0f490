"""The refiner applied at predict time, and the registry of refiner kinds by name."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gapkit.errors import Problem
from gapkit.refine.base import ImageRefiner
from gapkit.refine.cascade import CascadeRefiner
from gapkit.refine.cnn import CnnRefiner
from gapkit.refine.config import RefineConfig
from gapkit.refine.frame import frame_matrices, from_frame, read_crops, to_frame, warp
from gapkit.schemes import LandmarkScheme

REFINERS: dict[str, type[ImageRefiner]] = {k.name: k for k in (CnnRefiner, CascadeRefiner)}


def refiner_kind(method: str) -> type[ImageRefiner]:
    """The refiner class of a kind's name ("cnn", "cascade"); ValueError for another name."""
    try:
        return REFINERS[method]
    except KeyError:
        raise ValueError(f"unknown refiner kind {method!r}") from None


def crop_size(method: str, cfg: RefineConfig) -> int:
    """The crop side (px) of refiner kind ``method``."""
    return refiner_kind(method).crop_size(cfg)


class Refiner:
    """A trained image refiner: its settings, kind ("cnn" or "cascade"), reference frame (K, 2)
    crop px and weights. Called on image points, it cuts each face's crop in the frame, lets
    the kind refine the points there and maps them back."""

    def __init__(self, cfg: RefineConfig, ref: np.ndarray, scheme: LandmarkScheme, state: dict[str, np.ndarray],
                 method: str = "cnn", model: ImageRefiner | None = None):
        """``model``: what runs the kind (default: the kind built from ``state``; an exported
        graph's runner, for instance)."""
        self.cfg, self.ref, self.scheme, self.state = cfg, np.asarray(ref, float), scheme, state
        self.method = method
        self.model = model or refiner_kind(method)(cfg, scheme, state)

    def check(self) -> None:
        """Raise ValueError unless the weights fit the settings (a CNN is built here)."""
        self.model.check()

    @property
    def net(self):
        """The CNN of a CNN refiner (built on first use), else None."""
        return self.model.net if isinstance(self.model, CnnRefiner) else None

    def to(self, device: str) -> Refiner:
        self.model.to(device)
        return self

    def __call__(self, images: list[str], init: np.ndarray, ids: list[str] | None = None, chunk: int = 256,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
        """Refined image points (N, K, 2) from the adapted ``init`` (N, K, 2) of faces in ``images``,
        which faces were refined (N,) bool, and the problems: a face whose image cannot be read
        keeps ``init``."""
        init = np.asarray(init, float)
        out = init.copy()
        refined = np.zeros(len(init), bool)
        problems: list[Problem] = []
        size = self.model.crop_size(self.cfg)
        for i in range(0, len(init), chunk):
            part = init[i:i + chunk]
            m = frame_matrices(part, self.ref)
            (crops,), bad = read_crops(images[i:i + chunk], [(m, size)], ids[i:i + chunk] if ids else None)
            ok = np.ones(len(part), bool)
            ok[list(bad)] = False
            problems += bad.values()
            if ok.any():
                out[i:i + chunk][ok] = self._in_frame(crops[ok], m[ok], part[ok])
            refined[i:i + chunk] = ok
            if progress:
                progress(len(part))
        return out, refined, problems

    def on_images(self, images: list[np.ndarray], init: np.ndarray) -> np.ndarray:
        """Refined image points (N, K, 2) of faces whose decoded images (BGR, one per face; faces
        of one photograph may share it) are in memory, from their points ``init`` (N, K, 2)."""
        init = np.asarray(init, float)
        size = self.model.crop_size(self.cfg)
        m = frame_matrices(init, self.ref)
        crops = np.stack([warp(img, mi, size) for img, mi in zip(images, m, strict=True)])
        return self._in_frame(crops, m, init)

    def _in_frame(self, crops: np.ndarray, m: np.ndarray, init: np.ndarray) -> np.ndarray:
        """Image points refined by the kind on crops cut by frame matrices ``m`` (N, 2, 3)."""
        return from_frame(m, self.model.run(self.model.prepare(crops), to_frame(m, init)))

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a model file stores for this stage: its frame and weights (see :func:`read_refiner`)."""
        return {"refine_ref": self.ref} | {f"refine.{k}": v for k, v in self.state.items()}

    def describe(self) -> dict:
        """What a model file's meta says of this stage besides its report: kind and settings."""
        return {"method": self.method, "config": self.cfg.model_dump(mode="json")}


def read_refiner(info: dict, arrays: dict[str, np.ndarray], scheme: LandmarkScheme) -> Refiner:
    """The refinement stage a model file holds (``info``: its meta entry with ``method`` and
    ``config``; ``arrays``: the file's arrays, as :meth:`Refiner.arrays` wrote them), checked.
    ValueError when the stage is missing, incomplete or does not fit ``scheme``."""
    state = {k[7:]: v for k, v in arrays.items() if k.startswith("refine.")}
    ref = arrays.get("refine_ref")
    if not state or ref is None or ref.shape != (scheme.num_points, 2):
        raise ValueError("its image refinement stage is missing or incomplete")
    try:
        refiner = Refiner(RefineConfig(**info["config"]), ref, scheme, state, info.get("method", "cnn"))
        refiner.check()
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"its image refinement stage cannot be read ({exc})") from None
    return refiner
