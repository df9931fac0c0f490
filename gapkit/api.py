"""The Python API: the entry points a notebook needs, importable from ``gapkit`` itself.

Each function is a thin, typed door onto the wing that does the work (``gapkit.faceset``,
``gapkit.adapt``, ``gapkit.bench``, ``gapkit.gap``, ``gapkit.train``, ``gapkit.sim``); the
examples in the docstrings run in the test suite. Points are (N, K, 2) arrays in 0-based pixel
(x, y), as everywhere in gapkit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from gapkit.adapt import FitConfig, LabelAdapter, pair_records
from gapkit.bench import BenchConfig, CellResult, collect, default_config, override, run, run_folder
from gapkit.faceset import DataSource, FaceSet, map_record
from gapkit.faceset import load as load_records
from gapkit.gap.measure import GapOptions
from gapkit.gap.report import gap_report as write_gap_report
from gapkit.predict import predict_to_manifest
from gapkit.records import FaceRecord
from gapkit.refine import RefineConfig
from gapkit.schemes import find_mapper
from gapkit.sim import SimConfig, generate
from gapkit.sim import human_semantics as sim_human_semantics
from gapkit.train.detector import Detector
from gapkit.train.fit import detector_config, fit_detector, two_stage_settings
from gapkit.train.onnx import OnnxDetector, export_onnx
from gapkit.train.onnx import load_model as load_model_file

PathLike = str | Path

# Names that do not shadow the wings' packages (gapkit.adapt, gapkit.train, gapkit.predict).
__all__ = ["apply_adapter", "benchmark", "export", "fit_adapter", "gap_report", "human_semantics", "load",
           "load_adapter", "load_model", "map_scheme", "predict_faces", "simulate", "train_detector"]


def simulate(out: PathLike, n: int = 100, domain: Literal["real", "synthetic"] = "real", *, seed: int = 0,
             size: int = 128, label_gap: float = 1.0, visual_gap: float = 1.0, overwrite: bool = False) -> Path:
    """Write ``n`` faces of the built-in simulator into the folder ``out``; returns its manifest.
    (Here ``domain`` defaults to ``real`` and ``n`` to 100; ``gapkit sim``'s to synthetic and 2,000.)

    ``real`` faces are 300-W-like photographs labelled in ``ibug68`` (human semantics);
    ``synthetic`` ones are clean renders labelled with projected 3-D points (``facesynthetics70``).

    Examples:
        >>> import gapkit as gk
        >>> manifest = gk.simulate("sim/real", n=4, domain="real")
        >>> manifest.name
        'manifest.jsonl'
    """
    cfg = SimConfig(domain=domain, n=n, seed=seed, size=size, label_gap=label_gap, visual_gap=visual_gap)
    return generate(out, cfg, overwrite=overwrite)


def load(path: PathLike, *, format: str | None = None, split: str | list[str] | None = None,  # noqa: A002
         scheme: str | None = None, options: dict[str, str] | None = None) -> FaceSet:
    """Read a dataset (a manifest, a format folder or file) into a :class:`~gapkit.faceset.FaceSet`.

    ``format`` is found from the files when left out; ``scheme`` maps every record to that
    scheme on the way in. Bad records are skipped, as in ``gapkit convert``; a set with no
    good record is an error naming the path and the first problem. For the skipped records
    themselves, use :func:`gapkit.faceset.load`, which returns the report beside the set.

    Examples:
        >>> import gapkit as gk
        >>> faces = gk.load(gk.simulate("sim/syn", n=3, domain="synthetic"))
        >>> len(faces), faces.scheme, faces.points.shape
        (3, 'facesynthetics70', (3, 70, 2))
        >>> gk.load("sim/syn", scheme="ibug68").points.shape
        (3, 68, 2)
    """
    splits = [split] if isinstance(split, str) else split
    src = DataSource(path=Path(path), format=format, splits=splits, options=options or {})
    faces, _ = load_records(src, scheme=scheme, require=str(path))
    return faces


def map_scheme(faces: FaceSet, scheme: str) -> FaceSet:
    """The faces in another scheme by the deterministic mapping (``gapkit schemes`` lists them).

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.load(gk.simulate("sim/syn", n=2, domain="synthetic"))
        >>> gk.map_scheme(syn, "ibug68").scheme
        'ibug68'
    """
    mapper = find_mapper(faces.scheme, scheme)
    return FaceSet([map_record(r, mapper) for r in faces], scheme)


def human_semantics(faces: FaceSet) -> FaceSet:
    """Simulated faces relabelled in human (300-W, ``ibug68``) semantics: the simulator keeps
    both labellings of every face, so these pair with the projected labels for an adapter.

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.load(gk.simulate("sim/syn", n=2, domain="synthetic"))
        >>> gk.human_semantics(syn).scheme
        'ibug68'
    """
    return sim_human_semantics(faces)


def fit_adapter(source: FaceSet, target: FaceSet, *, images: bool = False, head: str = "auto", seed: int = 0,
                refine: dict | None = None, device: str = "auto") -> LabelAdapter:
    """Fit a label adapter on the faces present in both sets (paired by id): ``source``'s
    scheme and meaning to ``target``'s. With ``images`` it adds the image refinement stage
    (read from the target records' images; ``refine`` holds :class:`~gapkit.refine.RefineConfig`
    settings). Save it with ``adapter.save("a.gka")``.

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.load(gk.simulate("sim/syn", n=40, domain="synthetic"))
        >>> adapter = gk.fit_adapter(syn, gk.human_semantics(syn))
        >>> adapter.source.name, adapter.target.name
        ('facesynthetics70', 'ibug68')
    """
    pairs = pair_records(source, target)
    adapter = LabelAdapter(pairs.source_scheme, pairs.target_scheme)
    adapter.fit(pairs.source, pairs.target, FitConfig(head=head, seed=seed, device=device), ids=pairs.ids)
    if images:
        cfg = RefineConfig(**{"seed": seed, "device": device, **(refine or {})})
        adapter.fit_images(pairs.source, pairs.target, pairs.images, cfg, ids=pairs.ids)
    return adapter


def load_adapter(path: PathLike) -> LabelAdapter:
    """Read a ``.gka`` adapter file (``gapkit adapt fit`` or ``adapter.save`` wrote it).

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.load(gk.simulate("sim/syn", n=40, domain="synthetic"))
        >>> gk.fit_adapter(syn, gk.human_semantics(syn)).save("syn2real.gka")
        >>> gk.load_adapter("syn2real.gka").target.name
        'ibug68'
    """
    return LabelAdapter.load(path)


def apply_adapter(adapter: LabelAdapter, faces: FaceSet) -> FaceSet:
    """``faces`` rewritten into the adapter's target scheme and meaning; every record keeps its
    id and image, and says in ``attributes`` which adapter made it.

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.load(gk.simulate("sim/syn", n=40, domain="synthetic"))
        >>> adapter = gk.fit_adapter(syn, gk.human_semantics(syn))
        >>> adapted = gk.apply_adapter(adapter, syn)
        >>> adapted.scheme, adapted[0].attributes["adapted_from"]
        ('ibug68', 'facesynthetics70')
    """
    return adapter.adapt(faces).faces


def benchmark(config: PathLike | BenchConfig | None = None, out: PathLike = "runs", *, quick: bool = False,
              name: str | None = None) -> list[CellResult]:
    """Run (or resume) the strategy benchmark; returns its rows. ``config`` is a TOML file or a
    :class:`~gapkit.bench.BenchConfig`; without one, the built-in simulator's default grid
    (``quick``: a smoke-sized one). The report and figures are written to ``out/NAME``.

    Examples:
        >>> import gapkit as gk
        >>> rows = gk.benchmark(quick=True, out="runs")
        >>> sorted({r.strategy for r in rows})[:3]
        ['data_adapt', 'finetune', 'label_adapt']
        >>> (Path("runs") / "default-sim-quick" / "report.md").is_file()
        True
    """
    if config is None:
        cfg = default_config(Path(out) / "default-sim-data" / ("quick" if quick else "full"), quick=quick)
    else:
        cfg = override(config if isinstance(config, BenchConfig) else BenchConfig.from_toml(config), quick=quick)
    folder, _ = run_folder(Path(out), name, cfg.name, quick, fresh=False)  # the CLI's folder: NAME, or NAME-quick
    run(cfg, folder, smoke=quick)
    return collect(folder)


def gap_report(a: PathLike, b: PathLike, out: PathLike, *, adapter: PathLike | None = None,
               names: tuple[str, str] = ("A", "B"), overwrite: bool = False) -> dict:
    """Measure the label, pose and visual gaps between two face sets and write ``report.md``,
    ``gap.json`` and figures under ``out``; returns the numbers of ``gap.json``.

    Examples:
        >>> import gapkit as gk
        >>> syn = gk.simulate("sim/syn", n=30, domain="synthetic")
        >>> real = gk.simulate("sim/real", n=30, domain="real")
        >>> gap = gk.gap_report(syn, real, "gap", names=("synthetic", "real"))
        >>> gap["b"]["scheme"], 0.5 <= gap["visual_gap"]["domain_auc"] <= 1
        ('ibug68', True)
    """
    options = GapOptions(adapter=Path(adapter) if adapter else None)
    return write_gap_report(a, b, out, names=names, options=options, overwrite=overwrite).summary


def train_detector(data: PathLike | list[PathLike], out: PathLike, *, steps: int = 8000, format: str | None = None,  # noqa: A002
          split: str | None = None, two_stage: bool = False, overwrite: bool = False, **settings: object) -> Detector:
    """Train the benchmark's detector on real faces and save it as a ``.gkm`` model file.

    ``settings`` are :class:`~gapkit.train.TrainConfig` fields (``size``, ``width``,
    ``batch_size``, ``budget_s``...); the defaults are those measured against dlib's ERT.
    ``two_stage`` adds the image refiner as a second stage.

    Examples:
        >>> import gapkit as gk
        >>> real = gk.simulate("sim/real", n=12, domain="real")
        >>> model = gk.train_detector(real, "m.gkm", steps=3, size=32, width=4)
        >>> model.meta.scheme, model.meta.train_set.n
        ('ibug68', 12)
    """
    paths = data if isinstance(data, list) else [data]
    splits = [split] if split else None
    sources = [DataSource(path=Path(p), format=format, splits=splits) for p in paths]
    cfg = detector_config(steps=steps, **settings)
    if two_stage:
        cfg = cfg.model_copy(update={"refine": two_stage_settings({})})
    return fit_detector(sources, out, cfg, overwrite=overwrite)


def load_model(path: PathLike) -> Detector | OnnxDetector:
    """Read a ``.gkm`` model file, or an ``.onnx`` that ``export`` wrote (onnxruntime).

    Examples:
        >>> import gapkit as gk
        >>> gk.train_detector(gk.simulate("sim/real", n=12), "m.gkm", steps=3, size=32, width=4).path.name
        'm.gkm'
        >>> gk.load_model("m.gkm").meta.num_points
        68
    """
    return load_model_file(path)


def predict_faces(model: Detector | OnnxDetector | PathLike, data: PathLike, out: PathLike, *,
            boxes: Literal["labels", "detect"] = "labels", format: str | None = None,  # noqa: A002
            overwrite: bool = False) -> FaceSet:
    """Predict every face of ``data`` and write them to the manifest ``out``; returns them.

    ``boxes="labels"`` crops from each label's box (the benchmark's protocol); ``"detect"``
    finds the faces with the face detector the model file names. Records with a label carry
    their NME in ``attributes["nme"]``.

    Examples:
        >>> import gapkit as gk
        >>> real = gk.simulate("sim/real", n=12)
        >>> model = gk.train_detector(real, "m.gkm", steps=3, size=32, width=4)
        >>> preds = gk.predict_faces(model, real, "pred.jsonl")
        >>> len(preds), preds.scheme
        (12, 'ibug68')
    """
    model = model if isinstance(model, Detector | OnnxDetector) else load_model_file(model)
    predict_to_manifest(model, DataSource(path=Path(data), format=format), out, boxes=boxes, overwrite=overwrite)
    return _as_written(Path(out))


def _as_written(manifest: Path) -> FaceSet:
    """The records a command of gapkit wrote, read back as they are: without the readers' shape
    checks, which refuse a poor model's points that look mirrored (every prediction is kept)."""
    base = os.path.abspath(manifest.parent)  # as the manifest reader resolves images: symlinks kept
    records = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        fields = json.loads(line)
        fields["image"] = os.path.normpath(os.path.join(base, fields["image"]))  # stored relative to the manifest
        records.append(FaceRecord(**fields))
    return FaceSet(records)


def export(model: Detector | PathLike, out: PathLike, *, overwrite: bool = False) -> Path:
    """Write the model as ONNX (with a second graph ``NAME.refine.onnx`` for a two-stage model).

    Examples:
        >>> import gapkit as gk
        >>> model = gk.train_detector(gk.simulate("sim/real", n=12), "m.gkm", steps=3, size=32, width=4)
        >>> gk.export(model, "m.onnx").name
        'm.onnx'
        >>> gk.load_model("m.onnx").meta.scheme
        'ibug68'
    """
    model = model if isinstance(model, Detector) else Detector.load(model)
    return export_onnx(model, out, overwrite=overwrite)
