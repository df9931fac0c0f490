"""What a strategy is and what it sees, below everything that drives strategies.

A :class:`Strategy` is one function of a :class:`Cell` (N_real, seed, alpha) returning an
:class:`Outcome`, with declarations that the runner, the Ray planner, the model-key naming,
``--fresh`` and ``gapkit train --strategy`` read instead of knowing strategy names:

- ``needs``: what the runner builds before timing it (:data:`NEEDS`, each implies those before it);
- ``per_alpha``: one cell per synthetic batch share in ``grid.alphas``;
- ``model``: the one model file that is its detector: ``"own"`` (it trains a model under its
  cell key), ``"synthetic_model"`` (the seed's synthetic model, as is) or None (not one model;
  ``no_model`` says what it is instead);
- ``reuses``: the strategies whose models (same N_real and seed) it starts from;
- ``task``: how ``--ray`` groups its cells into tasks.

A cell is typed against :class:`Host`, the little it asks of whatever drives it, so this
module imports neither the runner nor the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

import numpy as np

from gapkit.adapt import LabelAdapter
from gapkit.bench.results import TrainPart, cell_key
from gapkit.detect import DetectedFaces
from gapkit.errors import ConfigError
from gapkit.train.data import FaceCrops, Source
from gapkit.train.detector import Detector
from gapkit.train.trainer import TrainConfig

# Each need implies those before it.
NEEDS = ("synthetic_model", "adapter", "adapted")
# The key prefix of the seed's synthetic model (the need "synthetic_model"): its file is
# models/synthetic_mapped_s<seed>.gkm.
SYNTHETIC_MODEL = "synthetic_mapped"

ModelKind = Literal["own", "synthetic_model"]


def synthetic_key(seed: int) -> str:
    """The key (model file stem) of the seed's synthetic model."""
    return f"{SYNTHETIC_MODEL}_s{seed}"


def closure(needs: frozenset[str] | set[str]) -> set[str]:
    """A need with everything it implies (each need implies those before it in NEEDS)."""
    return set(NEEDS[:max(NEEDS.index(n) for n in needs) + 1]) if needs else set()


@dataclass
class Data:
    """The run's faces, loaded once and handed to the runner and every cell."""

    pool: FaceCrops       # the real training pool
    test: FaceCrops       # the real test set (label-box crops)
    synthetic: FaceCrops  # the synthetic set, labels mapped to the target scheme
    test_points: np.ndarray
    detected: DetectedFaces | None = None  # the test faces a detector found, with their boxes
    test_detected: FaceCrops | None = None  # those faces, cropped from the calibrated detector box

    def test_crops(self) -> dict[str, FaceCrops]:
        """The test crops of each protocol."""
        return {"labels": self.test} | ({"detector": self.test_detected} if self.detected is not None else {})


@dataclass
class Outcome:
    pred: dict[str, np.ndarray]      # per test protocol ("labels", "detector"): (N, K, 2) image pixels
    train: list[TrainPart]
    init: str | None = None
    predictions: str | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str                       # how the report describes it
    run: Callable[[Cell], Outcome]
    needs: frozenset[str] = field(default_factory=frozenset)
    per_alpha: bool = False          # one cell per synthetic batch share in grid.alphas
    model: ModelKind | None = "own"  # the one model file that is its detector (see the module doc)
    no_model: str = ""               # with model None: what it is instead, and what to train
    reuses: tuple[str, ...] = ()     # strategies whose models (same N_real, seed) it starts from
    # --ray: "cell" (a task per cell), "seed" (every N_real in the task that trains the seed's
    # synthetic model) or a group name (one task per N_real and seed for the group's strategies,
    # which share what they build, e.g. the cell's adapter)
    task: str = "cell"

    def __post_init__(self) -> None:
        unknown = self.needs - set(NEEDS)
        if unknown:
            raise ValueError(f"strategy {self.name}: unknown needs {sorted(unknown)}; use {NEEDS}")
        if self.model not in ("own", "synthetic_model", None):
            raise ValueError(f"strategy {self.name}: model is 'own', 'synthetic_model' or None, not {self.model!r}")
        if self.model is None and not self.no_model:
            raise ValueError(f"strategy {self.name}: with model None, say in no_model what it is instead")
        if self.model == "synthetic_model" and "synthetic_model" not in self.needs:
            raise ValueError(f"strategy {self.name}: its model is the synthetic model, so it needs synthetic_model")
        if not self.task:
            raise ValueError(f"strategy {self.name}: task is 'cell', 'seed' or a group name")

    def key(self, n: int, seed: int, alpha: float | None = None, selection: str = "random") -> str:
        """The key of its cell (the row's file stem, and the model's when it trains one)."""
        return cell_key(self.name, n, seed, alpha, selection)

    def model_key(self, n: int, seed: int, alpha: float | None = None, selection: str = "random") -> str | None:
        """The key of the model file that is its detector in that cell (None: not one model)."""
        if self.model == "own":
            return self.key(n, seed, alpha, selection)
        return synthetic_key(seed) if self.model == "synthetic_model" else None


class FinetuneSettings(Protocol):
    @property
    def steps(self) -> int | None: ...
    @property
    def lr_scale(self) -> float: ...


class BenchSettings(Protocol):
    """What a strategy reads of the run's configuration (a BenchConfig)."""

    @property
    def train(self) -> TrainConfig: ...
    @property
    def finetune(self) -> FinetuneSettings: ...


class Host(Protocol):
    """What a cell asks of the runner that drives it."""

    @property
    def cfg(self) -> BenchSettings: ...

    def train(self, data: Data, sources: list[Source], seed: int, key: str, strategy: str,
              steps: int | None = None, init: dict | None = None, lr: float | None = None) -> Detector:
        """Train the model ``key`` (recorded as ``strategy``'s), or reload it where saved."""
        ...

    def predict_test(self, data: Data, model: Detector) -> dict[str, np.ndarray]:
        """``model``'s test predictions under each protocol (image pixels)."""
        ...


class Cell:
    """One (strategy, N_real, seed, alpha) of the grid, as a strategy sees it: ``real``,
    ``train(...)``, ``predict(model)`` and the needs it declared (``shared`` holds them: per
    seed, or per N_real and seed)."""

    def __init__(self, host: Host, data: Data, strategy: Strategy, n: int, seed: int, alpha: float | None,
                 idx: np.ndarray | Callable[[], np.ndarray], shared: dict, selection: str = "random"):
        """``idx``: the cell's N_real pool indices, or what computes them when first asked (a
        selection policy's ranking, which may need the synthetic model)."""
        self._host, self.data, self.strategy = host, data, strategy
        self.n, self.seed, self.alpha, self.shared, self.selection = n, seed, alpha, shared, selection
        self._idx = idx
        self.settings: BenchSettings = host.cfg

    @cached_property
    def idx(self) -> np.ndarray:
        return self._idx() if callable(self._idx) else self._idx

    @cached_property
    def ids(self) -> list[str]:
        return [self.data.pool.ids[i] for i in self.idx]

    def key(self, strategy: str | None = None) -> str:
        """The name of this cell's model (or of ``strategy``'s model in the same N_real, seed and
        selection)."""
        return cell_key(strategy or self.strategy.name, self.n, self.seed, self.alpha if strategy is None else None,
                        self.selection)

    @cached_property  # a subset copies crops: once per cell
    def real(self) -> Source:
        return Source(self.data.pool.subset(self.idx))

    def real_part(self, share: float | None = None) -> TrainPart:
        return TrainPart(set="real_train", n=self.n, labels="real", share=share)

    def synthetic_part(self, labels: str, share: float | None = None) -> TrainPart:
        return TrainPart(set="synthetic", n=len(self.data.synthetic), labels=labels, share=share)

    def _need(self, what: str):
        if what not in closure(self.strategy.needs):
            raise ConfigError(f"strategy {self.strategy.name} uses {what} but does not declare it in its needs")
        return self.shared[what]

    @property
    def synthetic_model(self) -> Detector:
        return self._need("synthetic_model")

    @property
    def synthetic_on_test(self) -> dict[str, np.ndarray]:
        self._need("synthetic_model")
        return self.shared["synthetic_on_test"]

    @property
    def adapter(self) -> LabelAdapter:
        return self._need("adapter")

    @property
    def adapted(self) -> Source:
        return self._need("adapted")

    def train(self, sources: list[Source], steps: int | None = None, init: dict | None = None,
              lr: float | None = None, of: str | None = None) -> Detector:
        """Train (or reload) this cell's model on ``sources``; with ``of``, the model of that
        strategy in the same N_real and seed, which this one declares it reuses."""
        s = self.strategy
        if of is not None and of not in s.reuses:
            raise ConfigError(f"strategy {s.name} trains {of}'s model but does not declare it in its reuses")
        if of is None and s.model != "own":
            raise ConfigError(f"strategy {s.name} trains a model but does not declare model='own'")
        return self._host.train(self.data, sources, self.seed, self.key(of), of or s.name, steps, init, lr)

    def predict(self, model: Detector) -> dict[str, np.ndarray]:
        """``model``'s test predictions under each protocol (image pixels)."""
        return self._host.predict_test(self.data, model)
