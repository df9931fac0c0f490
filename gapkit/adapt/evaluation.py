"""Scoring an adapter on pairs against the deterministic mapping and the mean-shape baseline."""

from __future__ import annotations

from gapkit.adapt.adapter import LabelAdapter
from gapkit.adapt.pairs import Pairs
from gapkit.errors import NoMappingError
from gapkit.metrics import summary
from gapkit.schemes import find_mapper


def evaluate(adapter: LabelAdapter, pairs: Pairs, threshold: float = 0.08) -> list[dict]:
    """NME / FR / AUC in the target scheme for the deterministic mapping (when one exists), the
    mean-shape Procrustes baseline and the adapter."""
    tgt = adapter.target
    rows = []
    try:
        mapper = find_mapper(pairs.source_scheme, pairs.target_scheme)
        rows.append(dict(method=f"mapping {mapper.name}",
                         **summary(mapper(pairs.source), pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    except NoMappingError:
        pass
    rows.append(dict(method="mean-shape Procrustes", **summary(adapter.mean_shape_baseline(pairs.source), pairs.target,
                                                               tgt, adapter.normaliser, threshold=threshold)))
    shape = adapter.predict(pairs.source, pairs.source_depth if adapter.depth else None)
    rows.append(dict(method=f"adapter ({adapter.head})",
                     **summary(shape, pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    if adapter.refiner is not None:
        pred, refined, problems = adapter.refiner(pairs.images, shape, pairs.ids)
        rows.append(dict(method=f"adapter ({adapter.head}) + image refinement", refined=int(refined.sum()),
                         problems=[str(p) for p in problems],
                         **summary(pred, pairs.target, tgt, adapter.normaliser, threshold=threshold)))
    return rows
