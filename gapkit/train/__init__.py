"""The bundled landmark detector and its trainer (one fixed architecture for every strategy)."""

from gapkit.augment import Augment
from gapkit.train.data import FaceCrops, Source
from gapkit.train.trainer import TrainConfig, predict, train

__all__ = ["Augment", "FaceCrops", "Source", "TrainConfig", "predict", "train"]
