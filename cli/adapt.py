"""`gapkit adapt fit|apply|eval`: learn, use and score a label adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gapkit.cli.ui import (
    FromOpt,
    OptionsOpt,
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

app = typer.Typer(help="Learn a label adapter from paired shapes, apply it, and score it.", no_args_is_help=True)

SourceOpt = Annotated[Path, typer.Option("--source", help="source-scheme records (manifest or format folder)")]
TargetOpt = Annotated[Path, typer.Option("--target", help="target-scheme records of the same faces (same ids)")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda")]
SplitOpt = Annotated[list[str] | None, typer.Option(help="use only target records of these splits (repeatable)")]
SourceFromOpt = Annotated[str | None, typer.Option("--source-from", help="format of --source [default: guessed]")]
TargetFromOpt = Annotated[str | None, typer.Option("--target-from", help="format of --target [default: guessed]")]
SourceOptOpt = Annotated[list[str] | None, typer.Option(
    "--source-opt", "-S", help="reader option KEY=VALUE for --source only (after -O)")]
TargetOptOpt = Annotated[list[str] | None, typer.Option(
    "--target-opt", "-T", help="reader option KEY=VALUE for --target only (after -O)")]
BothOptOpt = Annotated[list[str] | None, typer.Option(
    "--opt", "-O", help="reader option KEY=VALUE for both sides; -S / -T set one side")]


def _load(path: Path, fmt: str | None, opts: dict, what: str, splits: list[str] | None = None):
    from gapkit.faceset import DataSource, load

    with progress_bar(f"reading {what} {path.name}") as bar:
        task = bar.add_task("", total=None)
        faces, rep = load(DataSource(path=path, format=fmt, splits=splits, options=opts),
                          progress=lambda n: bar.advance(task, n), require=what)
    if rep.problems:
        err.print(f"[yellow]{what}: skipped {rep.skipped} bad records[/yellow]")
        show_problems(rep.problems)
    return faces, rep


def _pairs(source: Path, target: Path, sides: tuple, splits: list[str] | None = None,
           max_pairs: int | None = None, seed: int = 0):
    from gapkit.adapt import pair_records

    (s_fmt, s_opts), (t_fmt, t_opts) = sides
    src, _ = _load(source, s_fmt, s_opts, "source")
    # The split is the target's (people's labels carry it); source records may have none.
    tgt, _ = _load(target, t_fmt, t_opts, "target", splits)
    pairs = pair_records(src, tgt)
    if splits:
        pairs.only_source = []  # records of other splits are left out on purpose
    if max_pairs is not None:
        pairs = pairs.subset(max_pairs, seed)
    for side, ids in (("source", pairs.only_source), ("target", pairs.only_target)):
        if ids:
            more = f" ... (+{len(ids) - 5})" if len(ids) > 5 else ""
            err.print(f"[yellow]{len(ids)} ids only in the {side}[/yellow], not used: {', '.join(ids[:5])}{more}",
                      soft_wrap=True, highlight=False)
    console.print(f"{len(pairs.ids)} pairs: {pairs.source_scheme} -> {pairs.target_scheme}")
    return pairs


def _sides(source_from: str | None, target_from: str | None, both: list[str] | None, s_opt: list[str] | None,
           t_opt: list[str] | None) -> tuple:
    common = parse_opts(both)
    return (source_from, {**common, **parse_opts(s_opt)}), (target_from, {**common, **parse_opts(t_opt)})


@app.command()
def fit(
    source: SourceOpt,
    target: TargetOpt,
    out: Annotated[Path, typer.Option("-o", "--out", help="adapter file to write (.gka)")],
    head: Annotated[str, typer.Option(help="auto (choose by validation) | linear | mlp")] = "auto",
    val_frac: Annotated[float, typer.Option(help="share of the pairs held out for early stopping")] = 0.1,
    epochs: Annotated[int, typer.Option(help="most MLP epochs")] = 300,
    device: DeviceOpt = "auto",
    seed: int = 0,
    split: SplitOpt = None,
    max_pairs: Annotated[int | None, typer.Option(help="fit on a seeded random subset of this many pairs")] = None,
    images: Annotated[bool, typer.Option(
        "--images", help="add the image refinement stage, read from the target records' images")] = False,
    refine_steps: Annotated[int | None, typer.Option(
        help="training steps of the image refinement's CNN (each fit); default RefineConfig.steps")] = None,
    refine: Annotated[list[str] | None, typer.Option(
        "--refine", help="an image refinement setting KEY=VALUE (repeatable; gapkit.refine.RefineConfig), "
                         "e.g. method=cnn or size=96")] = None,
    depth: Annotated[bool, typer.Option(
        "--depth", help="also use the source's per-point depth (attributes z, e.g. MediaPipe's)")] = False,
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing adapter file")] = False,
    source_from: SourceFromOpt = None,
    target_from: TargetFromOpt = None,
    opt: BothOptOpt = None,
    source_opt: SourceOptOpt = None,
    target_opt: TargetOptOpt = None,
) -> None:
    """Fit an adapter on faces labelled in both schemes, paired by id."""
    from gapkit.adapt import FitConfig, LabelAdapter
    from gapkit.devices import set_threads
    from gapkit.files import check_output
    from gapkit.refine import RefineConfig

    with job_errors():
        check_output(out, overwrite)
        set_threads(threads)
        if not 0 <= val_frac < 0.5:
            raise ConfigError(f"--val-frac must be in [0, 0.5), got {val_frac}")
        sides = _sides(source_from, target_from, opt, source_opt, target_opt)
        pairs = _pairs(source, target, sides, split, max_pairs, seed)
        if depth and pairs.source_depth is None:
            raise ConfigError("--depth needs a depth on every source record (attributes z, one number a point)")
        z = pairs.source_depth if depth else None
        adapter = LabelAdapter(pairs.source_scheme, pairs.target_scheme)
        cfg = FitConfig(head=head, val_frac=val_frac, epochs=epochs, device=device, seed=seed)
        with progress_bar("training") as bar:
            task = bar.add_task("", total=epochs)
            rep = adapter.fit(pairs.source, pairs.target, cfg, ids=pairs.ids, source_depth=z,
                              progress=lambda e, n: bar.update(task, completed=e))
        refined = None
        if images:
            steps = {} if refine_steps is None else {"steps": refine_steps}
            rcfg = RefineConfig(**{**steps, "device": device, "seed": seed, **parse_opts(refine)})
            with progress_bar("image refinement") as bar:
                task = bar.add_task("", total=None)
                refined = adapter.fit_images(pairs.source, pairs.target, pairs.images, rcfg, ids=pairs.ids,
                                             progress=lambda i, n: bar.update(task, completed=i, total=n),
                                             source_depth=z)
            if refined.problems:
                err.print(f"[yellow]{len(refined.problems)} pairs without a readable image were left out of the "
                          "image refinement[/yellow]")
                show_problems(refined.problems)
        adapter.save(out, overwrite=overwrite)
    val = adapter.meta["val_nme_pct"]
    cv = f"; {rep.cv['folds']}-fold CV NME linear {rep.cv['linear_nme_pct']:.2f}% vs mlp {rep.cv['mlp_nme_pct']:.2f}%" \
        if rep.cv else ""
    console.print(f"[green]wrote[/green] {out}: head {rep.head}{' with depth' if depth else ''}, {rep.n_train} train / {rep.n_val} val pairs, "
                  f"device {adapter.meta['fit_device']}"
                  + (f", val NME({adapter.normaliser}) {val:.2f}%" if val is not None else "") + cv,
                  soft_wrap=True, highlight=False)
    if refined is not None:
        verdict = f"kept: {refined.method}" if refined.used else \
            "not kept: it did not help, the adapter stays shape-only"
        tried = ", ".join(f"{k} {v:.2f}%" for k, v in refined.candidates.items())
        console.print(f"image refinement {verdict} ({refined.how} on {refined.n_pairs} pairs: NME "
                      f"{refined.shape_nme_pct:.2f}% shape-only vs {tried}; {refined.fit_s:.0f} s)",
                      soft_wrap=True, highlight=False)


@app.command()
def apply(
    adapter_file: Annotated[Path, typer.Argument(help="adapter (.gka)")],
    src: Annotated[Path, typer.Argument(help="source-scheme records (manifest or format folder)")],
    out: Annotated[Path, typer.Argument(help="manifest to write, in the adapter's target scheme")],
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing output")] = False,
    from_fmt: FromOpt = None,
    opt: OptionsOpt = None,
) -> None:
    """Translate every record of SRC into the adapter's target scheme. An adapter with an image
    refinement stage reads each record's image; a face whose image cannot be read keeps the
    shape-only answer (attribute refined = false), is reported, and the command exits 1."""
    from gapkit.adapt import LabelAdapter, one_scheme
    from gapkit.devices import set_threads
    from gapkit.files import check_output
    from gapkit.formats.manifest import write_manifest

    with job_errors():
        check_output(out, overwrite)
        set_threads(threads)
        faces, rep = _load(src, from_fmt, parse_opts(opt), "input")
        adapter = LabelAdapter.load(adapter_file, source=one_scheme(faces, "input")).to(device)
        with progress_bar("refining on the images" if adapter.refiner else "adapting") as bar:
            task = bar.add_task("", total=len(faces))
            adapted = adapter.adapt(faces, adapter_file.name, progress=lambda n: bar.advance(task, n))
        n = write_manifest(adapted.faces, out, overwrite=overwrite)
    problems = adapted.problems
    console.print(f"[green]wrote[/green] {n} records to {out} ({adapter.source.name} -> {adapter.target.name}"
                  + (f", {adapted.refined} refined on their images" if adapted.refined is not None else "") + ")")
    if problems:
        err.print(f"[yellow]{len(problems)} faces kept the shape-only answer: no readable image[/yellow]")
        show_problems(problems)
    exit_for([*rep.problems, *problems])


@app.command("eval")
def evaluate(
    adapter_file: Annotated[Path, typer.Argument(help="adapter (.gka)")],
    source: SourceOpt,
    target: TargetOpt,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    device: DeviceOpt = "cpu",
    split: SplitOpt = None,
    source_from: SourceFromOpt = None,
    target_from: TargetFromOpt = None,
    opt: BothOptOpt = None,
    source_opt: SourceOptOpt = None,
    target_opt: TargetOptOpt = None,
) -> None:
    """Score the deterministic mapping, the mean-shape Procrustes baseline and the adapter; with an
    image refinement stage, the shape-only and the refined adapter side by side."""
    from gapkit.adapt import LabelAdapter
    from gapkit.adapt import evaluate as run

    with job_errors():
        pairs = _pairs(source, target, _sides(source_from, target_from, opt, source_opt, target_opt), split)
        adapter = LabelAdapter.load(adapter_file, source=pairs.source_scheme, target=pairs.target_scheme).to(device)
        rows = run(adapter, pairs)
    problems = [p for r in rows for p in r.get("problems", [])]
    if problems:
        err.print(f"[yellow]{len(problems)} faces scored with their shape-only answer: no readable image[/yellow]")
        show_problems(problems)
    if json_out:
        print(json.dumps({"adapter": str(adapter_file), "pairs": len(pairs.ids), "rows": rows}, indent=1))
    else:
        _eval_table(adapter, pairs, rows)
    exit_for(problems)


def _eval_table(adapter, pairs, rows: list[dict]) -> None:
    t = Table(title=f"{adapter.source.name} -> {adapter.target.name} on {len(pairs.ids)} faces")
    for col in ("method", f"NME({adapter.normaliser})", "FR@8%", "AUC@8%"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        t.add_row(r["method"], f"{r['nme_pct']:.2f}%", f"{100 * r['fr@0.08']:.1f}%", f"{r['auc@0.08']:.3f}")
    console.print(t)


