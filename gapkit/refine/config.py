"""Settings and report of an image refinement fit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from gapkit.errors import Problem
from gapkit.settings import Settings

HIDDEN = 128  # width of the CNN refiner's per-point hidden layer


class RefineConfig(Settings):
    method: Literal["auto", "cnn", "cascade"] = "auto"  # auto: cascade below small_data, else the better one
    size: int = 160  # CNN crop side (px); at equal fit time 160 px / 2,000 steps beat 128 px / 2,500
    width: int = 32  # channels of the stride-4 map (the stride-8 map has twice as many)
    stages: int = 3
    window: int = 3  # window x window samples, 4 crop px apart, on the stride-4 map (2 px on stride 2)
    steps: int = 2000  # at most; fewer on small data (see ``epochs``)
    epochs: int = 500  # steps = min(steps, max(200, epochs * pairs / batch_size))
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    rotate: float = 8.0  # +- degrees of the augmentation's frame perturbation
    scale: float = 0.06
    shift: float = 0.03
    jitter: float = 0.8  # px: extra random error put on the initial points while training
    flip_test: bool = True
    folds: int = 3  # below ``small_data`` pairs, k-fold CV decides whether the refiner is kept
    small_data: int = 200
    val_frac: float = 0.1
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # the CNN in bfloat16 autocast where the device computes it natively (see bf16_native)
    cascade_size: int = 160  # the descriptor cascade's crop side (px)
    cascade_cells: tuple[float, ...] = (6.0, 3.0)  # descriptor cell sizes (crop px)
    cascade_stages: int = 3
    cascade_samples: int = 2000  # about this many training starts: faces, mirrors and jittered copies
    cascade_jitter: float = 1.0  # px
    cascade_strengths: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # ridge strengths tried by CV


@dataclass
class RefineReport:
    used: bool
    n_pairs: int
    how: str  # how shape-only and refined were compared: "3-fold cv" or "10% held out"
    shape_nme_pct: float
    refined_nme_pct: float
    steps: int
    method: str = "cnn"  # the refiner kept, or the best one tried when none is kept
    candidates: dict[str, float] = field(default_factory=dict)  # validation NME % of each method tried
    fit_s: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def as_meta(self) -> dict:
        """The report as a model file keeps it: every field, the problems only counted (``unreadable``)."""
        return {k: v for k, v in asdict(self).items() if k != "problems"} | {"unreadable": len(self.problems)}
