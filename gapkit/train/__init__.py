"""The bundled landmark detector and its trainer (one fixed architecture for every strategy)."""

from gapkit.train.data import Augment, FaceCrops, Source
from gapkit.train.trainer import TrainConfig, predict, train

__all__ = ["Augment", "FaceCrops", "Source", "TrainConfig", "predict", "train"]
