"""Benchmark configuration: data sets, the grid and the training budget, from TOML.

```toml
name = "bench-300w-subset"
target_scheme = "ibug68"

[[real_train]]          # the pool the N_real images are drawn from: one table, or several pooled
path = "../shared/data/300w"
format = "300w"
splits = ["train"]

[[real_train]]
path = "../shared/data/300w_extra"
format = "300w"

[real_test]             # used only for the final numbers
path = "../shared/data/300w"
format = "300w"
splits = ["common"]

[[synthetic]]           # one or more synthetic sets, mapped to target_scheme
path = "../shared/data/facesynthetics"
format = "facesynthetics"

[grid]
n_real = [10, 25, 50, 100, "all"]
seeds = [0, 1, 2]
alphas = [0.25, 0.5, 0.75]
strategies = ["real_only", "label_adapt", "data_adapt", "mix", "finetune"]

[train]                 # gapkit.train.TrainConfig
steps = 400
size = 128

[finetune]              # the fine-tune stage of `finetune`
steps = 200
lr_scale = 0.5

[metric]
normaliser = "inter_ocular"
failure_threshold = 0.08
```
A top-level ``detector_boxes = true`` also scores every model on test crops from a face
detector's box (the second test protocol, see :mod:`gapkit.detect`); ``crop_cache = "DIR"``
memory-maps the crops from a content-keyed cache there (:mod:`gapkit.train.cache`), and
``[train] loader_workers = N`` feeds training from N DataLoader worker processes.
Relative paths are relative to the TOML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import BeforeValidator, Field, field_validator, model_validator

from gapkit.bench.selection import POLICIES
from gapkit.bench.strategies import STRATEGIES
from gapkit.detect import DEFAULT_DETECTOR, build_detector
from gapkit.errors import ConfigError, InputError
from gapkit.faceset import DataSource
from gapkit.settings import Settings
from gapkit.train.trainer import TrainConfig


def _one_or_more(v: object) -> object:
    return [v] if isinstance(v, dict | DataSource) else v


Sets = Annotated[list[DataSource], BeforeValidator(_one_or_more)]


class Grid(Settings):
    n_real: list[int | Literal["all"]] = [10, 25, 50, 100, 250, "all"]
    seeds: list[int] = [0, 1, 2]
    alphas: list[float] = [0.25, 0.5, 0.75]
    strategies: list[str] = Field(default_factory=lambda: list(STRATEGIES))
    # How each cell's N_real faces are chosen from the pool (gapkit.bench.selection.POLICIES);
    # "list" follows the config's selection_list. Every policy's subsets are nested.
    selection: list[str] = ["random"]

    @field_validator("selection")
    @classmethod
    def _policies(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(POLICIES) - {"list"})
        if bad:
            raise ValueError(f"unknown selection policies {bad}; use {', '.join([*POLICIES, 'list'])}")
        if len(set(v)) != len(v) or not v:
            raise ValueError("selection names each policy once, at least one")
        return v

    @field_validator("strategies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = sorted(set(v) - set(STRATEGIES))
        if bad:
            raise ValueError(f"unknown strategies {bad}; use {', '.join(STRATEGIES)}")
        return v

    @field_validator("alphas")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        if any(not 0 < a < 1 for a in v):
            raise ValueError("alphas are synthetic shares of a batch, strictly between 0 and 1")
        return v


class Finetune(Settings):
    steps: int | None = None   # default: train.steps // 2
    lr_scale: float = Field(0.5, gt=0)  # of train.lr


class Metric(Settings):
    normaliser: str = "inter_ocular"
    failure_threshold: float = Field(0.08, gt=0, lt=1)  # fraction of the normaliser, for FR and AUC


class BenchConfig(Settings):
    name: str = "bench"
    target_scheme: str = "ibug68"
    real_train: Sets    # one table, or a list of them pooled into one set
    real_test: Sets
    synthetic: Sets     # each kept apart (its ids prefixed), all mapped to target_scheme
    grid: Grid = Field(default_factory=Grid)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: Finetune = Field(default_factory=Finetune)
    metric: Metric = Field(default_factory=Metric)
    # Also score every model on test faces cropped from a face detector's box (calibrated on
    # training faces), besides the label-box crops; missed faces are counted.
    detector_boxes: bool = False
    # The face detector by its registered name (gapkit.detect.DETECTORS; "kind" or "kind:variant").
    face_detector: str = DEFAULT_DETECTOR

    @field_validator("face_detector")
    @classmethod
    def _known_detector(cls, v: str) -> str:
        build_detector(v)  # a ConfigError names what is wrong: before any cell trains, not after
        return v
    # A folder for memory-mapped crops (gapkit.train.cache): built once, shared by processes and
    # Ray workers; None keeps the crops decoded in memory.
    crop_cache: Path | None = None
    # A selection list (`gapkit select`'s ids file) as the real pool's order: the grid's
    # selection "list" takes its first N faces for N_real (the rest of the pool after it).
    selection_list: Path | None = None

    @model_validator(mode="after")
    def _list_named(self) -> BenchConfig:
        if ("list" in self.grid.selection) != (self.selection_list is not None):
            raise ValueError("grid selection 'list' and selection_list go together: name the list file, and "
                             "add 'list' to [grid] selection")
        return self

    @classmethod
    def from_toml(cls, path: str | Path) -> BenchConfig:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise InputError(f"{p}: cannot read ({exc.strerror})") from None
        try:
            cfg = cls(**raw)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        base = p.resolve().parent
        if cfg.crop_cache is not None and not cfg.crop_cache.is_absolute():
            cfg.crop_cache = (base / cfg.crop_cache).resolve()
        if cfg.selection_list is not None and not cfg.selection_list.is_absolute():
            cfg.selection_list = (base / cfg.selection_list).resolve()
        for ds in [*cfg.real_train, *cfg.real_test, *cfg.synthetic]:
            if not ds.path.is_absolute():
                ds.path = (base / ds.path).resolve()
        return cfg


def override(cfg: BenchConfig, quick: bool = False, steps: int | None = None, size: int | None = None,
             seeds: list[int] | None = None, n_real: list[int | str] | None = None,
             strategies: list[str] | None = None, detector_boxes: bool | None = None,
             selection: list[str] | None = None) -> BenchConfig:
    """A copy of ``cfg`` with the command line's overrides (validated like the TOML);
    ``quick`` shrinks a grid to a smoke test: two N_real, one seed, one alpha, 30 steps."""
    d = cfg.model_dump()
    g, t = d["grid"], d["train"]
    if quick:
        g.update(n_real=g["n_real"][:2], seeds=g["seeds"][:1], alphas=[0.5])
        t["steps"] = min(t["steps"], 30)
    for table, key, value in ((t, "steps", steps), (t, "size", size), (g, "seeds", seeds), (g, "n_real", n_real),
                              (g, "strategies", strategies), (g, "selection", selection)):
        if value is not None:
            table[key] = value
    if detector_boxes is not None:
        d["detector_boxes"] = detector_boxes
    return BenchConfig(**d)
