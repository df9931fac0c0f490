"""Label adaptation: translate landmarks from one scheme's meaning into another's.

:class:`LabelAdapter` learns, from paired shapes of the same faces, a map from ``source`` scheme
points to ``target`` scheme points (:mod:`~gapkit.adapt.shape_fit`: a similarity-aligned local
prior plus ridge, and an MLP residual when the data support it), optionally followed by an
image refinement stage from :mod:`gapkit.refine`. :mod:`~gapkit.adapt.pairs` matches records
into pairs; :func:`evaluate` scores an adapter against the mapping and mean-shape baselines.
"""

from gapkit.adapt.adapter import FILE_KIND, FILE_VERSION, PREDICT_CHUNK, Adapted, LabelAdapter
from gapkit.adapt.config import FitConfig, FitReport
from gapkit.adapt.evaluation import evaluate
from gapkit.adapt.pairs import Pairs, check_shapes, one_scheme, pair_records, record_depth
from gapkit.adapt.shape_fit import LOCAL_RIDGE, SMALL_DATA, ShapeFit, fit_shapes
from gapkit.errors import AdapterError, InputError
from gapkit.refine import RefineConfig, Refiner, RefineReport

__all__ = [
    "FILE_KIND", "FILE_VERSION", "LOCAL_RIDGE", "PREDICT_CHUNK", "SMALL_DATA", "Adapted", "AdapterError", "FitConfig",
    "FitReport", "InputError", "LabelAdapter", "Pairs", "RefineConfig", "RefineReport", "Refiner", "ShapeFit",
    "check_shapes", "evaluate", "fit_shapes", "one_scheme", "pair_records", "record_depth",
]
