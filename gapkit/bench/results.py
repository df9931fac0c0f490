"""Typed benchmark results: one :class:`CellResult` per (strategy, alpha, N_real, seed), saved
as ``cells/<key>.json`` by the runner and read back by the report."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class TrainPart(BaseModel):
    """One set a model trained on: which set, how many faces, which labels, its batch share."""

    model_config = ConfigDict(extra="forbid")
    set: str            # real_train | synthetic
    n: int
    labels: str         # real | mapped | adapted
    share: float | None = None  # of every batch, when sets are mixed


class AdapterInfo(BaseModel):
    """The cell's label adapter: fitted on the cell's N_real images only."""

    model_config = ConfigDict(extra="forbid")
    train_ids: list[str]
    head: str
    fit_s: float
    fitted_on: str      # what the adapter maps from and to
    applied_to: str | None = None  # what it rewrote to make the adapted synthetic set


class DetectorScore(BaseModel):
    """The cell's model on test faces cropped from a face detector's (calibrated) box: scores
    over the faces it found, and how many it missed (never scored, always reported)."""

    model_config = ConfigDict(extra="forbid")
    detector: str
    found: int
    missed: int
    missed_ids: list[str]
    nme_pct: float      # over the found faces
    fr: float           # over the found faces
    fr_all: float       # a missed face counted as a failure
    auc: float
    per_face_nme: list[float]  # found faces, in test order


class CellResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: str
    alpha: float | None
    n_real: int
    seed: int
    test_set: str
    test_n: int
    test_ids_sha: str
    real_ids: list[str]  # the cell's N_real training images
    normaliser: str
    threshold: float     # failure threshold for fr and auc, as a fraction of the normaliser
    nme_pct: float
    fr: float
    auc: float
    per_face_nme: list[float]
    time_s: float        # wall time of the cell's own work (shared pieces it needs are built before)
    train: list[TrainPart]
    init: str | None = None          # the model a fine-tune started from
    predictions: str | None = None   # how test predictions were made, where not by the trained model alone
    adapter: AdapterInfo | None = None
    detector: DetectorScore | None = None  # the detector-box protocol, when the config asks for it
    selection: str = "random"  # the policy that chose real_ids (gapkit.bench.selection)

    @property
    def name(self) -> str:
        """The strategy as the report names it (mix cells by their alpha)."""
        name = self.strategy if self.alpha is None else f"{self.strategy} a={self.alpha:g}"
        return name if self.selection == "random" else f"{name} [{self.selection}]"

    @property
    def key(self) -> str:
        return cell_key(self.strategy, self.n_real, self.seed, self.alpha, self.selection)


def cell_key(strategy: str, n: int, seed: int, alpha: float | None = None, selection: str = "random") -> str:
    """The name of a cell (its row's file) and of the model it trains; random selection, the
    grid's first, adds nothing, so runs from before the selection axis resume."""
    a = f"_a{alpha:g}" if alpha is not None else ""
    sel = f"_sel-{selection}" if selection != "random" else ""
    return f"{strategy}{a}_n{n}_s{seed}{sel}"


CSV_COLUMNS = ["strategy", "alpha", "n_real", "seed", "nme_pct", "fr", "auc", "threshold", "normaliser", "time_s"]


def collect(out: Path) -> list[CellResult]:
    """Every finished cell in the run folder ``out``, in a stable order."""
    rows = [CellResult.model_validate_json(p.read_text()) for p in sorted((Path(out) / "cells").glob("*.json"))]
    return sorted(rows, key=lambda r: (r.strategy, r.alpha or 0, r.n_real, r.seed))
