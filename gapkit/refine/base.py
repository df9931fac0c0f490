"""The interface every image refiner kind implements.

A kind is trained on crops in the refiner's frame (:mod:`gapkit.refine.frame`) with initial and
target crop points (N, K, 2), and then moves crop points towards where the image says they
belong. Kinds are looked up by name (``RefineConfig.method``, a file's ``refine.method``) in
:data:`gapkit.refine.refiner.REFINERS`, never by branches on the name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from gapkit.refine.config import RefineConfig
from gapkit.schemes import LandmarkScheme


class ImageRefiner(ABC):
    """One trained refiner of a kind: its settings, scheme and weights (named arrays)."""

    name: ClassVar[str]
    # After validation, train once more on every face (else keep the model trained without the
    # held-out faces, which is only done on large data).
    refit_on_all: ClassVar[bool] = False

    def __init__(self, cfg: RefineConfig, scheme: LandmarkScheme, state: dict[str, np.ndarray]):
        self.cfg, self.scheme, self.state = cfg, scheme, state

    @staticmethod
    @abstractmethod
    def crop_size(cfg: RefineConfig) -> int:
        """The side (px) of this kind's crops."""

    @staticmethod
    def prepare(crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops as this kind reads them (default: unchanged)."""
        return crops

    @staticmethod
    @abstractmethod
    def work(cfg: RefineConfig) -> int:
        """Progress units one training takes (a CNN step is one)."""

    @classmethod
    @abstractmethod
    def train(cls, crops: np.ndarray, init: np.ndarray, target: np.ndarray, cfg: RefineConfig,
              scheme: LandmarkScheme, device: str, tick: Callable[[int], None]) -> ImageRefiner:
        """Train on prepared crops with initial and target crop points (N, K, 2); NaN targets
        are left out. ``tick(k)`` reports k more progress units done."""

    @abstractmethod
    def check(self) -> None:
        """Raise ValueError unless the weights fit the settings and the scheme."""

    @abstractmethod
    def run(self, crops: np.ndarray, pts: np.ndarray) -> np.ndarray:
        """Refined crop points (N, K, 2) on prepared crops from ``pts`` (N, K, 2); with
        ``cfg.flip_test`` the mean of the crop's answer and its mirror image's."""

    def to(self, device: str) -> ImageRefiner:
        """Run on ``device`` from now on (kinds that run on the CPU ignore it)."""
        return self

    def test_flip(self) -> np.ndarray | None:
        """The scheme's flip permutation when test-time flipping is on, else None."""
        return np.array(self.scheme.flip) if self.cfg.flip_test else None
