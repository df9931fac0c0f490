"""What a gap measure is and the registry the report walks.

A measure (:class:`GapMeasure`) takes the two face sets as :class:`GapContext` holds them and
contributes its numbers (its entry in ``gap.json``), its figures, its section of
``report.md`` and its rows of the CLI's table. :func:`gapkit.gap.report.gap_report` walks
:data:`MEASURES` in registration order, so a new measure is one module with a GapMeasure and
one :func:`register_measure` line (in :mod:`gapkit.gap.report`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from gapkit.errors import Problem
from gapkit.faceset import FaceSet
from gapkit.schemes import LandmarkScheme
from gapkit.settings import Settings

Log = Callable[[str], None]
Row = tuple[str, str, str]  # a row of the CLI's table: gap, measure, value


class GapOptions(Settings):
    adapter: Path | None = None
    backbone: Path | None = None
    visual: bool = True
    labels_only: bool = False  # read the sets without their images (no visual gap; an adapter must not refine)
    crop_size: int = 64
    max_faces: int | None = None
    seed: int = 0
    device: str = "cpu"


@dataclass
class GapContext:
    """What every measure reads: both sets, A's points in B's scheme per stage (``mapped``, or
    ``before`` and ``after adapter``), the head poses from the landmarks, and the options."""

    a: FaceSet
    b: FaceSet
    stages: dict[str, np.ndarray]
    b_points: np.ndarray
    scheme: LandmarkScheme              # B's, the common one
    pose_a: np.ndarray                  # (Na, 3) yaw, pitch, roll in degrees (NaN: unknown)
    pose_b: np.ndarray
    names: tuple[str, str]
    options: GapOptions
    log: Log = lambda s: None
    progress: Callable[[int], None] | None = None
    problems: list[Problem] = field(default_factory=list)  # inputs a measure left out; listed in the report


@dataclass
class Measured:
    """A measure's numbers (its entry in gap.json) and what draws its figures under a folder."""

    numbers: dict
    draw: Callable[[Path], list[Path]] = lambda out: []


class GapMeasure(ABC):
    """One gap: its numbers, figures, report section and table rows."""

    key: ClassVar[str]  # its entry in gap.json

    @abstractmethod
    def measure(self, ctx: GapContext) -> Measured | None:
        """Its numbers and figures for ``ctx``; None where it is not asked for (no entry at all)."""

    @abstractmethod
    def section(self, s: dict) -> list[str]:
        """Its lines of report.md from the report's summary ``s`` (gap.json before cleaning)."""

    def rows(self, s: dict) -> list[Row]:
        """Its rows of the CLI's table, from the same summary."""
        return []


MEASURES: dict[str, GapMeasure] = {}  # key -> measure; the report follows this order


def register_measure(measure: GapMeasure) -> GapMeasure:
    """Add ``measure`` to the measures every report takes, after those already there."""
    if measure.key in MEASURES:
        raise ValueError(f"a gap measure {measure.key!r} is already registered")
    MEASURES[measure.key] = measure
    return measure


def fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    """A number for report.md; ``n/a`` for None or NaN."""
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}{unit}"
