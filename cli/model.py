"""`gapkit train`, `gapkit predict`, `gapkit export`: from the benchmark to a model people use."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from gapkit.cli.ui import (
    FromOpt,
    ThreadsOpt,
    console,
    err,
    exit_for,
    job_errors,
    parse_opts,
    progress_bar,
    show_problems,
)
from gapkit.errors import ConfigError

DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]


def train(
    data: Annotated[list[Path] | None, typer.Argument(help="training sets (folders or manifests), pooled")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="model file to write")] = ...,
    from_fmt: FromOpt = None,
    split: Annotated[list[str] | None, typer.Option(help="keep only these splits (repeatable)")] = None,
    n_real: Annotated[int | None, typer.Option("--n-real", help="train on this many of the faces [default: all]")] = None,
    seed: int = 0,
    steps: Annotated[int | None, typer.Option(help="training steps [default: 8000 real-only, the config's "
                                                   "with --config]")] = None,
    size: Annotated[int | None, typer.Option(help="crop side in pixels [default: 64]")] = None,
    budget: Annotated[float | None, typer.Option(help="stop after this many seconds (the learning-rate decay "
                                                      "follows the clock)")] = None,
    config: Annotated[Path | None, typer.Option(help="a bench.toml: train one strategy on its data sections")] = None,
    strategy: Annotated[str, typer.Option(help="with --config: a benchmark strategy that is one model (an "
                                               "unknown name lists the strategies)")] = "real_only",
    alpha: Annotated[float | None, typer.Option(help="with --config and a strategy run per alpha (one that mixes "
                                                     "sets): the synthetic share of a batch [default: the "
                                                     "config's first alpha]")] = None,
    face_detector: Annotated[str | None, typer.Option(help="the face detector whose boxes `predict --boxes detect` "
                                                           "calibrates (e.g. opencv-haar, dlib-hog:1) [default: "
                                                           "the config's with --config, else dlib-hog:0]")] = None,
    two_stage: Annotated[bool, typer.Option(
        "--two-stage", help="add a second stage that refines stage 1's points on the image, trained to move "
                            "stage 1's predictions of the training faces to their labels (kept only where "
                            "it beats stage 1 on held-out faces)")] = False,
    refine: Annotated[list[str] | None, typer.Option(
        "--refine", help="with --two-stage: KEY=VALUE, where its starts come from (starts=auto|own|out_of_fold, "
                         "own_from, folds, fold_share) or a setting of the "
                         "refiner (gapkit.refine.RefineConfig: method, steps, size...); repeatable")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model file")] = False,
) -> None:
    """Train the benchmark's detector into one model file (resumes from OUT.ckpt when killed);
    with --two-stage, a second stage that reads the image around the first stage's points."""
    from gapkit.bench.fit import fit_strategy
    from gapkit.devices import set_threads
    from gapkit.faceset import DataSource
    from gapkit.train.fit import detector_config, fit_detector, two_stage_settings

    with job_errors():
        used = set_threads(threads)
        log = lambda m: console.print(m, highlight=False, markup=False)  # noqa: E731
        if refine and not two_stage:
            raise ConfigError("--refine sets the second stage: give --two-stage too")
        if config is not None:
            if two_stage:
                raise ConfigError("with --config a second stage is the config's [train.refine] table")
            if data:
                raise ConfigError("give training sets or --config, not both: --config takes its data from the TOML")
            if face_detector is not None:
                raise ConfigError("with --config the face detector is the config's face_detector")
            with progress_bar("training") as bar:
                task = bar.add_task("", total=None)
                det, row = fit_strategy(config, strategy, out, n_real=n_real, seed=seed, alpha=alpha, steps=steps,
                                        size=size, overwrite=overwrite, log=log,
                                        progress=lambda k, s, n: bar.update(task, completed=s, total=n, description=k))
            console.print(f"{strategy} on its test set: NME({row['normaliser']}) {row['nme_pct']:.2f}%, "
                          f"FR {row['fr']:.1%} ({row['time_s']:.0f} s)", highlight=False)
        else:
            if not data:
                raise ConfigError("give one or more training sets, or --config T.toml --strategy NAME")
            if strategy != "real_only" or alpha is not None:
                raise ConfigError("--strategy and --alpha need --config (the synthetic and real sets of a bench.toml)")
            cfg = detector_config(steps=steps, size=size, seed=seed, device=device, budget_s=budget,
                                  refine=two_stage_settings(parse_opts(refine)) if two_stage else None)
            sources = [DataSource(path=p, format=from_fmt, splits=split) for p in data]
            console.print(f"torch uses {used} CPU thread{'s' * (used != 1)}", highlight=False)
            with progress_bar("training") as bar:
                task = bar.add_task("", total=cfg.steps)
                det = fit_detector(sources, out, cfg, n_real=n_real, overwrite=overwrite, log=log,
                                   progress=lambda s, n: bar.update(task, completed=s, total=n),
                                   face_detector=face_detector)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 wrote it and says so
        return
    m = det.meta
    console.print(f"[green]wrote[/green] {out} [dim]({m.scheme}, {m.size} px crops, {m.train_set.n} training faces, "
                  f"strategy {m.strategy}, seed {m.seed})[/dim]")


def predict(
    model: Annotated[Path, typer.Argument(help="a model file (.gkm) or its ONNX export (.onnx)")],
    src: Annotated[Path, typer.Argument(help="a dataset, a manifest, or a folder of images")],
    out: Annotated[Path, typer.Option("--out", "-o", help="manifest of predictions to write")] = ...,
    from_fmt: FromOpt = None,
    split: Annotated[list[str] | None, typer.Option(help="predict only these splits (repeatable)")] = None,
    boxes: Annotated[str, typer.Option(help="labels: crop from the label box | detect: find faces with "
                                            "the face detector the model file names")] = "labels",
    batch_size: Annotated[int, typer.Option(help="crops per forward pass")] = 64,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    report: Annotated[Path | None, typer.Option(help="JSON report [default: OUT.report.json]")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output")] = False,
) -> None:
    """Predict landmarks for every face of SRC; with labels, print NME, FR and AUC."""
    from gapkit.devices import set_threads
    from gapkit.faceset import DataSource
    from gapkit.files import atomic_write_text, check_output
    from gapkit.predict import predict_to_manifest
    from gapkit.train.onnx import load_model

    report_path = report or out.with_name(out.name + ".report.json")
    with job_errors():
        if boxes not in ("labels", "detect"):
            raise ConfigError(f"--boxes is labels or detect, got {boxes!r}")
        check_output(report_path, overwrite)
        set_threads(threads)
        net = load_model(model, device=device)
        with progress_bar(f"predicting {src.name}") as bar:
            task = bar.add_task("", total=None)
            rep = predict_to_manifest(net, DataSource(path=src, format=from_fmt, splits=split), out, boxes=boxes,
                                      batch_size=batch_size, overwrite=overwrite, progress=lambda k: bar.advance(task, k))
        atomic_write_text(report_path, json.dumps(rep.to_dict(), indent=1), overwrite=overwrite)
    console.print(f"[green]wrote[/green] {rep.faces} faces from {rep.images} images to {out} "
                  f"[dim]({rep.faces / rep.seconds:.0f} faces/s, {rep.seconds:.1f} s; boxes: {boxes})[/dim]",
                  highlight=False)
    sc = rep.scores()
    if sc:
        line = (f"NME({sc['normaliser']}) {sc['nme_pct']:.2f}%  FR@{sc['threshold']:.0%} {sc['fr']:.1%}  "
                f"AUC@{sc['threshold']:.0%} {sc['auc']:.3f}  over {sc['n']} labelled faces")
        if boxes == "detect":
            line += f"; detector missed {sc['missed']} (FR counting them as failures: {sc['fr_all']:.1%})"
        console.print(line, highlight=False)
    if rep.problems:
        err.print(f"[yellow]skipped {len(rep.problems)}[/yellow]; report: {report_path}")
        show_problems(rep.problems)
    console.print(f"report: {report_path}")
    exit_for(rep.problems)


def export(
    model: Annotated[Path, typer.Argument(help="a model file (.gkm)")],
    out: Annotated[Path, typer.Argument(help="ONNX file to write")],
    overwrite: Annotated[bool, typer.Option(help="replace an existing file")] = False,
) -> None:
    """Export a model file to ONNX (its metadata travels inside); `gapkit predict OUT.onnx` runs it."""
    from gapkit.train.detector import Detector
    from gapkit.train.onnx import export_onnx

    with job_errors():
        export_onnx(Detector.load(model), out, overwrite=overwrite)
    console.print(f"[green]wrote[/green] {out}")
