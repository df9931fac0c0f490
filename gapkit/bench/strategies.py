"""The benchmark's strategies, as data: each is one function of a :class:`~gapkit.bench.runner.Cell`
(N_real, seed, alpha), registered in :data:`STRATEGIES` with what it needs. The runner walks
the table in order and builds each declared need before timing the strategy; the config
validates names against it, the report takes labels from it, the tests read it.

A cell offers ``real`` (its N_real faces), ``train(...)``, ``predict(model)`` and, where
declared, ``synthetic_model`` (trained once per seed on the synthetic labels mapped into the
target scheme), ``adapter`` (a LabelAdapter fitted on the cell's N_real images only) and
``adapted`` (the synthetic set with its labels rewritten by that adapter, applied to the
synthetic model's predictions on the synthetic faces: the same kind of input the adapter was
fitted on). Predictions are per test protocol: ``{"labels": ..., "detector": ...}``. Asking for an
undeclared need is an error, so the declarations stay true.

Adding a strategy is one function here and one row in ``tests/test_bench.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gapkit.bench.results import TrainPart
from gapkit.train.data import Source

if TYPE_CHECKING:
    from gapkit.bench.runner import Cell

# Each need implies those before it.
NEEDS = ("synthetic_model", "adapter", "adapted")


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

    def __post_init__(self) -> None:
        unknown = self.needs - set(NEEDS)
        if unknown:
            raise ValueError(f"strategy {self.name}: unknown needs {sorted(unknown)}; use {NEEDS}")


STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, label: str, needs: tuple[str, ...] = (), per_alpha: bool = False):
    """Register the decorated function as strategy ``name``."""
    def register(fn: Callable[[Cell], Outcome]) -> Callable[[Cell], Outcome]:
        STRATEGIES[name] = Strategy(name, label, fn, frozenset(needs), per_alpha)
        return fn
    return register


@strategy("real_only", "real images only")
def real_only(cell: Cell) -> Outcome:
    model = cell.train([cell.real])
    return Outcome(cell.predict(model), [cell.real_part()])


@strategy("synthetic_only", "synthetic model, labels mapped by the scheme mapping, no adapter",
          needs=("synthetic_model",))
def synthetic_only(cell: Cell) -> Outcome:
    # The baseline the adapters must beat; it does not depend on N_real.
    return Outcome(cell.synthetic_on_test, [cell.synthetic_part("mapped")],
                   predictions="synthetic-only model, no adaptation")


@strategy("label_adapt", "synthetic model, its predictions label-adapted", needs=("adapter",))
def label_adapt(cell: Cell) -> Outcome:
    pred = {k: cell.adapter.predict(v) for k, v in cell.synthetic_on_test.items()}
    return Outcome(pred, [cell.synthetic_part("mapped")],
                   predictions="synthetic-only model, adapted by the cell's LabelAdapter")


@strategy("data_adapt", "trained on label-adapted synthetic", needs=("adapted",))
def data_adapt(cell: Cell) -> Outcome:
    model = cell.train([cell.adapted])
    return Outcome(cell.predict(model), [cell.synthetic_part("adapted")])


@strategy("finetune", "adapted synthetic pre-training, real fine-tuning", needs=("adapted",))
def finetune(cell: Cell) -> Outcome:
    # The data_adapt model (reloaded when that strategy ran, trained here when it did not).
    base = cell.key("data_adapt")
    init = cell.train([cell.adapted], key=base).state_dict()
    ft = cell.settings.finetune
    model = cell.train([cell.real], steps=ft.steps or cell.settings.train.steps // 2, init=init,
                       lr=cell.settings.train.lr * ft.lr_scale)
    return Outcome(cell.predict(model), [cell.real_part()], init=f"{base} (pre-trained on adapted synthetic)")


@strategy("mix", "real and adapted synthetic in every batch", needs=("adapted",), per_alpha=True)
def mix(cell: Cell) -> Outcome:
    a = cell.alpha
    model = cell.train([Source(cell.real.crops, 1 - a), Source(cell.adapted.crops, a)])
    return Outcome(cell.predict(model), [cell.real_part(share=1 - a), cell.synthetic_part("adapted", share=a)])
