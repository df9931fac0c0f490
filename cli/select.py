"""`gapkit select`: which faces of a pool to send to annotators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gapkit.cli.ui import FromOpt, console, err, job_errors, progress_bar, show_problems
from gapkit.errors import ConfigError


def select(
    data: Annotated[list[Path] | None, typer.Argument(
        help="the pool: dataset folders, files or manifests, pooled [default: --config's real_train]")] = None,
    n: Annotated[int, typer.Option("--n", help="how many faces to pick", min=1)] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="the selection list to write (rank, id, reason)")] = ...,
    policy: Annotated[str, typer.Option(help="random, diverse or uncertain (gapkit.bench.selection)")] = "diverse",
    synthetic_model: Annotated[Path | None, typer.Option(
        help="the synthetic model (.gkm) that sees the faces [default: the one the benchmark trains on "
             "--config's synthetic sets, or on the built-in simulator's]")] = None,
    config: Annotated[Path | None, typer.Option(help="a bench.toml whose synthetic sets and [train] make the "
                                                     "synthetic model (reloaded from its run folder when there)")] = None,
    runs: Annotated[Path, typer.Option(help="folder of benchmark runs (where a synthetic model is kept)")] = Path("runs"),
    seed: int = 0,
    from_fmt: FromOpt = None,
    split: Annotated[list[str] | None, typer.Option(help="keep only these splits (repeatable)")] = None,
    manifest: Annotated[Path | None, typer.Option(help="also write the picked records here [default: OUT.jsonl]")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing outputs")] = False,
) -> None:
    """Pick N faces of a pool for labelling, ranked, with the reason each was picked; the list
    feeds `gapkit benchmark` (selection_list) and `gapkit app --selection`."""
    from gapkit.bench.selection import get_policy, select_faces, write_selection
    from gapkit.faceset import load
    from gapkit.files import check_output
    from gapkit.formats.manifest import ManifestWriter

    with job_errors():
        pol = get_policy(policy)
        manifest = manifest or out.with_name(out.name + ".jsonl")
        for p in (out, manifest):
            check_output(p, overwrite)
        sources, scheme = _pool(data, from_fmt, split, config)
        # as the benchmark loads its pool, so the ids match a config that names the list
        faces, rep = load(sources, scheme=scheme, min_points=0.5, require="the pool")
        if rep.problems:
            err.print(f"[yellow]skipped {rep.skipped} records[/yellow]")
            show_problems(rep.problems)
        if n > len(faces):
            raise ConfigError(f"--n {n} is more than the {len(faces)} faces in the pool")
        model, size, margin = (_synthetic_model(synthetic_model, config, runs, seed) if pol.needs_view
                               else (None, 64, 1.3))
        with console.status(f"ranking {len(faces)} faces ({policy})"):
            ranking = select_faces(list(faces), policy, model, seed, size, margin)
        where = ", ".join(str(src.path) for src in sources)
        header = f"gapkit select: policy {policy}, seed {seed}, {n} of {len(faces)} faces of {where}"
        write_selection(out, [r.id for r in faces], ranking, n, header, overwrite=overwrite)
        with ManifestWriter(manifest, overwrite=overwrite) as w:
            for k, i in enumerate(ranking.order[:n]):
                r = faces[int(i)]
                w.write(r.model_copy(update={"attributes": dict(r.attributes, selection_rank=k + 1,
                                                                selection_policy=policy,
                                                                selection_reason=ranking.reasons[k])}))
    console.print(f"[green]wrote[/green] {out} and {manifest}: {n} of {len(faces)} faces, policy {policy}")
    for k in range(min(n, 5)):
        console.print(f"  {k + 1}. {faces[int(ranking.order[k])].id}: {ranking.reasons[k]}", highlight=False)


def _pool(data: list[Path] | None, from_fmt: str | None, split: list[str] | None, config: Path | None):
    """The pool's sources and the scheme to read them in: the paths given, else the config's
    real_train in its target scheme."""
    from gapkit.bench import BenchConfig
    from gapkit.faceset import DataSource

    if data:
        scheme = BenchConfig.from_toml(config).target_scheme if config is not None else None
        return [DataSource(path=p, format=from_fmt, splits=split) for p in data], scheme
    if config is None:
        raise ConfigError("give the pool (dataset paths), or --config T.toml to select from its real_train")
    cfg = BenchConfig.from_toml(config)
    return list(cfg.real_train), cfg.target_scheme


def _synthetic_model(path: Path | None, config: Path | None, runs: Path, seed: int):
    """(LandmarkNet, crop size, margin) of the synthetic model: the file given, else the one the
    benchmark trains (or has trained) for ``seed`` on the config's synthetic sets."""
    from gapkit.train.detector import Detector

    if path is not None:
        det = Detector.load(path)
        return det.net, det.meta.size, det.meta.margin
    import os

    from gapkit.bench import BenchConfig, Runner, default_config, load_data

    if config is not None:
        cfg = BenchConfig.from_toml(config)
        folder = runs / cfg.name
        console.print(f"no --synthetic-model: training (or reloading) the synthetic model of seed {seed} as "
                      f"`gapkit benchmark --config {config}` does, in {folder / 'models'}")
    else:
        cfg = default_config(runs / "default-sim-data" / "full", workers=os.cpu_count() or 1)
        folder = runs / "default-sim"
        console.print(f"no --synthetic-model or --config: training (or reloading) the synthetic model of seed {seed} "
                      f"on the built-in simulator's faces, as `gapkit benchmark` does, in {folder / 'models'}")
    runner = Runner(cfg, folder)
    with progress_bar("synthetic model") as bar:
        task = bar.add_task("", total=cfg.train.steps)
        runner.progress = lambda key, s, total: bar.update(task, completed=s, total=total)
        det = runner.synthetic_model(load_data(cfg), seed)
    return det.net, cfg.train.size, cfg.train.margin
