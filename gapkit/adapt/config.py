"""Settings and report of a shape adapter fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import field_validator

from gapkit.settings import Settings


class FitConfig(Settings):
    head: str = "auto"  # auto | linear | mlp
    hidden: tuple[int, ...] = (256,)
    epochs: int = 300
    max_steps: int = 2500  # optimiser steps in all; caps the epochs on large data
    batch_size: int = 512
    lr: float = 1e-2
    weight_decay: float = 1e-4
    patience: int = 25
    val_frac: float = 0.1
    folds: int = 5
    local_neighbours: int = 8  # source points in each target point's local prior; 0: plain ridge
    seed: int = 0
    device: str = "auto"
    ridge_alphas: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 2, 17))

    @field_validator("head")
    @classmethod
    def _known_head(cls, v: str) -> str:
        if v not in ("auto", "linear", "mlp"):
            raise ValueError(f"unknown head {v!r}; use auto, linear or mlp")
        return v


@dataclass
class FitReport:
    n_pairs: int
    n_train: int
    n_val: int
    head: str
    ridge_alpha: float
    epochs_run: int = 0
    val_nme_linear_pct: float | None = None
    val_nme_mlp_pct: float | None = None
    cv: dict = field(default_factory=dict)
