"""Image refinement: move landmarks to where the image says they belong.

Any shape given its image can be refined: the label adapter's second stage uses it, and a
detector's can. Each face is warped into a frame where its shape sits on the target mean shape
(:mod:`~gapkit.refine.frame`); a refiner kind (:class:`ImageRefiner`) moves the points there:
the CNN (:mod:`~gapkit.refine.cnn`) learns from hundreds of faces, the descriptor cascade
(:mod:`~gapkit.refine.cascade`) from tens. :func:`fit` picks a kind by validation and keeps it
only where it beats the shape alone; :class:`Refiner` applies it to image points.

This package sits on the model floor: it imports nothing of :mod:`gapkit.adapt`.
"""

from gapkit.refine.base import ImageRefiner
from gapkit.refine.cascade import CascadeRefiner
from gapkit.refine.cnn import CnnRefiner, build_net, run_net, state_arrays, train_net
from gapkit.refine.config import HIDDEN, RefineConfig, RefineReport
from gapkit.refine.fitting import fit
from gapkit.refine.frame import (
    FACE_FILL,
    frame_matrices,
    from_frame,
    grey,
    mirror,
    mirror_points,
    read_crops,
    reference_frame,
    to_frame,
    warp,
)
from gapkit.refine.refiner import REFINERS, Refiner, crop_size, read_refiner, refiner_kind

__all__ = [
    "FACE_FILL", "HIDDEN", "REFINERS", "CascadeRefiner", "CnnRefiner", "ImageRefiner", "RefineConfig",
    "RefineReport", "Refiner", "build_net", "crop_size", "fit", "frame_matrices", "from_frame", "grey", "mirror",
    "mirror_points", "read_crops", "read_refiner", "refiner_kind", "reference_frame", "run_net", "state_arrays", "to_frame",
    "train_net", "warp",
]
