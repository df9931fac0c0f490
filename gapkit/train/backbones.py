"""The backbones a LandmarkNet is built on: one registry, validated in one place.

Each name says which builder of :data:`gapkit.train.model.BUILDERS` makes it (``compact``:
gapkit's residual CNN, scaled by ``width``; ``resnet``: torchvision's ResNet of the same name,
built in plain torch with random weights) and, for a fixed-width net, the channels of its S/4,
S/8 and S/16 stages. The registry is torch-free, so settings (:class:`~gapkit.train.TrainConfig`)
check a name without importing torch. A new ResNet depth is one :func:`register_backbone` line
plus its block layout in :data:`gapkit.train.model.RESNETS`; a new family is one builder in
:mod:`gapkit.train.model` plus its lines here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gapkit.errors import ConfigError


@dataclass(frozen=True)
class Backbone:
    name: str
    builder: str                                # a key of gapkit.train.model.BUILDERS
    channels: tuple[int, int, int] | None = None  # S/4, S/8, S/16; None: they follow ``width``


BACKBONES: dict[str, Backbone] = {}  # name -> Backbone, in registration order


def register_backbone(name: str, builder: str, channels: tuple[int, int, int] | None = None) -> Backbone:
    """Name a backbone; ``builder`` is the key of the function that builds it."""
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered")
    BACKBONES[name] = Backbone(name, builder, channels)
    return BACKBONES[name]


def check_backbone(name: str) -> str:
    """``name`` when it is a registered backbone; a ConfigError naming the known ones otherwise."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
    return name


register_backbone("compact", "compact")
register_backbone("resnet18", "resnet", (64, 128, 256))
register_backbone("resnet34", "resnet", (64, 128, 256))
register_backbone("resnet50", "resnet", (256, 512, 1024))
