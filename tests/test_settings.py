"""Every configuration model fails the same way: a ConfigError naming the field and the reason."""

from __future__ import annotations

import pytest

from gapkit.adapt import FitConfig
from gapkit.bench.config import Grid, Metric
from gapkit.errors import ConfigError
from gapkit.faceset import DataSource
from gapkit.sim import SimConfig
from gapkit.train import TrainConfig


@pytest.mark.parametrize("make, match", [
    (lambda: TrainConfig(steps=0), "steps"),
    (lambda: TrainConfig(bogus=1), "bogus"),
    (lambda: TrainConfig(augment={"flip": "often"}), "augment.*flip"),
    (lambda: SimConfig(visual_gap=2), "--visual-gap must be in"),
    (lambda: SimConfig(domain="cartoon"), "unknown domain"),
    (lambda: FitConfig(head="tree"), "unknown head"),
    (lambda: Grid(alphas=[1.0]), "strictly between 0 and 1"),
    (lambda: Metric(failure_threshold=0), "failure_threshold"),
    (lambda: DataSource(path="x", splits="train", extra=1), "extra"),
])
def test_bad_settings_are_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_settings_round_trip_through_their_dump():
    t = TrainConfig(steps=9, augment={"flip": 0.0})
    assert TrainConfig(**t.model_dump()) == t
    s = SimConfig(domain="real", n=3)
    assert SimConfig(**s.model_dump()) == s
