"""The benchmark's strategies, as data: each is one function of a :class:`~gapkit.bench.cell.Cell`
(N_real, seed, alpha), registered in :data:`STRATEGIES` with its declarations
(:class:`~gapkit.bench.cell.Strategy`). The runner walks the table in order and builds each
declared need before timing the strategy; the Ray planner groups cells into tasks by what they
declare; ``--fresh``, ``gapkit train --strategy``, the config, the report and the tests read it.

A cell offers ``real`` (its N_real faces), ``train(...)``, ``predict(model)`` and, where
declared, ``synthetic_model`` (trained once per seed on the synthetic labels mapped into the
target scheme), ``adapter`` (a LabelAdapter fitted on the cell's N_real images only) and
``adapted`` (the synthetic set with its labels rewritten by that adapter, applied to the
synthetic model's predictions on the synthetic faces: the same kind of input the adapter was
fitted on). Predictions are per test protocol: ``{"labels": ..., "detector": ...}``. Asking for an
undeclared need, or training a model not declared, is an error, so the declarations stay true.

Adding a strategy is one function here and one row in ``tests/test_bench.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from gapkit.bench.cell import SYNTHETIC_MODEL, Cell, ModelKind, Outcome, Strategy
from gapkit.train.data import Source

STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str, label: str, needs: tuple[str, ...] = (), per_alpha: bool = False,
             model: ModelKind | None = "own", no_model: str = "", reuses: tuple[str, ...] = (),
             task: str = "cell") -> Callable[[Callable[[Cell], Outcome]], Callable[[Cell], Outcome]]:
    """Register the decorated function as strategy ``name`` (the arguments are
    :class:`~gapkit.bench.cell.Strategy`'s declarations)."""
    for r in reuses:  # registered before it, so the table order is also the order they run in
        if r not in STRATEGIES or STRATEGIES[r].model != "own":
            raise ValueError(f"strategy {name} reuses {r!r}, which is not an earlier strategy that trains a model")

    def register(fn: Callable[[Cell], Outcome]) -> Callable[[Cell], Outcome]:
        STRATEGIES[name] = Strategy(name, label, fn, frozenset(needs), per_alpha, model, no_model, reuses, task)
        return fn
    return register


def synthetic_model_owner() -> str:
    """The strategy a seed's synthetic model file is recorded as: the first whose detector it is."""
    return next((s.name for s in STRATEGIES.values() if s.model == "synthetic_model"), SYNTHETIC_MODEL)


@strategy("real_only", "real images only")
def real_only(cell: Cell) -> Outcome:
    model = cell.train([cell.real])
    return Outcome(cell.predict(model), [cell.real_part()])


@strategy("synthetic_only", "synthetic model, labels mapped by the scheme mapping, no adapter",
          needs=("synthetic_model",), model="synthetic_model", task="seed")
def synthetic_only(cell: Cell) -> Outcome:
    # The baseline the adapters must beat; it does not depend on N_real.
    return Outcome(cell.synthetic_on_test, [cell.synthetic_part("mapped")],
                   predictions="synthetic-only model, no adaptation")


@strategy("label_adapt", "synthetic model, its predictions label-adapted", needs=("adapter",), model=None,
          no_model="a model plus a label adapter, not one detector: train synthetic_only and fit the adapter "
                   "with gapkit adapt fit", task="adapter")
def label_adapt(cell: Cell) -> Outcome:
    pred = {k: cell.adapter.predict(v) for k, v in cell.synthetic_on_test.items()}
    return Outcome(pred, [cell.synthetic_part("mapped")],
                   predictions="synthetic-only model, adapted by the cell's LabelAdapter")


@strategy("data_adapt", "trained on label-adapted synthetic", needs=("adapted",), task="adapter")
def data_adapt(cell: Cell) -> Outcome:
    model = cell.train([cell.adapted])
    return Outcome(cell.predict(model), [cell.synthetic_part("adapted")])


@strategy("finetune", "adapted synthetic pre-training, real fine-tuning", needs=("adapted",),
          reuses=("data_adapt",))
def finetune(cell: Cell) -> Outcome:
    # The data_adapt model (reloaded when that strategy ran, trained here when it did not).
    init = cell.train([cell.adapted], of="data_adapt").net.state_dict()
    ft = cell.settings.finetune
    model = cell.train([cell.real], steps=ft.steps or cell.settings.train.steps // 2, init=init,
                       lr=cell.settings.train.lr * ft.lr_scale)
    return Outcome(cell.predict(model), [cell.real_part()],
                   init=f"{cell.key('data_adapt')} (pre-trained on adapted synthetic)")


@strategy("mix", "real and adapted synthetic in every batch", needs=("adapted",), per_alpha=True)
def mix(cell: Cell) -> Outcome:
    a = cell.alpha
    model = cell.train([Source(cell.real.crops, 1 - a), Source(cell.adapted.crops, a)])
    return Outcome(cell.predict(model), [cell.real_part(share=1 - a), cell.synthetic_part("adapted", share=a)])
