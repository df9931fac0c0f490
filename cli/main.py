"""`gapkit` command line: parse options, call the library, print with rich, set the exit code.

Exit codes: 0 all good; 1 some records were skipped (see the report); 2 a configuration
error stopped the job before it started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gapkit.cli.adapt import app as adapt_app
from gapkit.cli.app import app as app_command
from gapkit.cli.gap import app as gap_app
from gapkit.cli.model import export, predict
from gapkit.cli.model import train as train_command
from gapkit.cli.select import select
from gapkit.cli.ui import (
    EXIT_SKIPPED,
    FromOpt,
    NoImagesOpt,
    OptionsOpt,
    WriteOptionsOpt,
    console,
    err,
    exit_for,
    fail,
    job_errors,
    parse_opts,
    progress_bar,
    show_problems,
)
from gapkit.errors import GapkitError
from gapkit.version import __version__

app = typer.Typer(help="gapkit: close the label gap and the domain gap between synthetic and real face landmarks. "
                       "Exit codes: 0 done; 1 bad records skipped (listed); 2 could not start; "
                       "3 an internal error was caught on some records (tracebacks in the report).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(adapt_app, name="adapt")
app.add_typer(gap_app, name="gap")
app.command("app")(app_command)
app.command("train")(train_command)
app.command()(predict)
app.command()(export)
app.command()(select)

@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="input file or folder")],
    out: Annotated[Path, typer.Argument(help="output file or folder")],
    from_fmt: FromOpt = None,
    to_fmt: Annotated[str, typer.Option("--to", help="output format")] = "manifest",
    scheme: Annotated[str | None, typer.Option(help="map every record to this scheme")] = None,
    mapping: Annotated[str | None, typer.Option(help="use this named mapping (see `gapkit schemes`)")] = None,
    split: Annotated[list[str] | None, typer.Option(help="keep only these splits (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace existing output")] = False,
    strict: Annotated[bool, typer.Option(help="stop at the first bad record")] = False,
    report: Annotated[Path | None, typer.Option(help="JSON report path [default: OUT.report.json]")] = None,
    opt: OptionsOpt = None,
    write_opt: WriteOptionsOpt = None,
    no_images: NoImagesOpt = False,
) -> None:
    """Convert a landmark dataset between formats (and schemes), skipping and reporting bad records.

    Every image is opened (header and end marker), so a missing, empty or truncated image is
    a skipped record, never a converted one; `gapkit validate` also decodes every pixel. With
    --no-images only the labels are read (writers that place images need -W images=none)."""
    from gapkit.convert import convert as run
    from gapkit.convert import write_report
    from gapkit.files import check_output
    from gapkit.formats import guess_format

    report_path = report or out.with_name(out.name + ".report.json")
    with job_errors():
        fmt = from_fmt or guess_format(src)
        check_output(report_path, overwrite)
        with progress_bar(f"converting {src.name}") as bar:
            task = bar.add_task("", total=None)
            rep = run(src, out, fmt, to_fmt, scheme=scheme, mapping=mapping, splits=split, overwrite=overwrite,
                      strict=strict, read_options=parse_opts(opt), write_options=parse_opts(write_opt),
                      progress=lambda n: bar.advance(task, n), labels_only=no_images)
        write_report(rep, report_path, overwrite=overwrite)
    if not rep.written:
        err.print(f"[red]no good records[/red] in {src}: nothing written; {rep.skipped} skipped, report: {report_path}")
        show_problems(rep.problems)
        exit_for(rep.problems)
        raise typer.Exit(EXIT_SKIPPED)  # nothing was bad, but nothing was left (other splits, no faces)
    schemes = ", ".join(f"{k} ({v})" for k, v in rep.schemes.items()) or "none"
    console.print(f"[green]wrote[/green] {rep.written} records to {out} [dim]({to_fmt}; schemes: {schemes})[/dim]")
    _counted(rep)
    if rep.problems:
        err.print(f"[yellow]skipped {rep.skipped} bad records[/yellow]; report: {report_path}")
        show_problems(rep.problems)
    console.print(f"report: {report_path}")
    exit_for(rep.problems)


def _counted(rep) -> None:
    """What was left out on purpose: other splits, entries that hold no face."""
    if rep.filtered:
        console.print(f"left out {rep.filtered} records of other splits")
    for reason, n in rep.not_faces.items():
        console.print(f"left out {n} entries without a face ({reason})")


@app.command()
def validate(
    src: Annotated[Path, typer.Argument(help="input file or folder")],
    from_fmt: FromOpt = None,
    split: Annotated[list[str] | None, typer.Option(help="check only these splits (repeatable)")] = None,
    strict: Annotated[bool, typer.Option(help="stop at the first bad record")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --json file")] = False,
    opt: OptionsOpt = None,
    no_images: NoImagesOpt = False,
) -> None:
    """Check and summarise a dataset without writing it; every image is decoded in full."""
    from gapkit.convert import validate as run
    from gapkit.convert import write_report
    from gapkit.formats import guess_format

    with job_errors():
        fmt = from_fmt or guess_format(src)
        with progress_bar(f"validating {src.name}") as bar:
            task = bar.add_task("", total=None)
            rep = run(src, fmt, strict=strict, splits=split, read_options=parse_opts(opt),
                      progress=lambda n: bar.advance(task, n), labels_only=no_images)
        if json_out:
            write_report(rep, json_out, overwrite=overwrite)
    t = Table(title=f"{src} ({fmt})", show_header=False)
    s = rep.stats
    t.add_row("good records", str(s["records"]))
    t.add_row("bad records (skipped)", str(rep.skipped))
    t.add_row("schemes", ", ".join(f"{k}: {v}" for k, v in rep.schemes.items()) or "-")
    t.add_row("splits", ", ".join(f"{k or '(none)'}: {v}" for k, v in rep.splits.items()) or "-")
    if s["image_width"]:
        t.add_row("image width / height", f"{s['image_width'][0]}-{s['image_width'][1]} / "
                                          f"{s['image_height'][0]}-{s['image_height'][1]} px")
    if s["records_without_image_size"]:
        t.add_row("records without an image size", str(s["records_without_image_size"]))
    t.add_row("points outside the image", f"{s['points_outside_image']} in {s['records_with_points_outside_image']} records")
    t.add_row("missing (NaN) points", f"{s['missing_points']} in {s['records_with_missing_points']} records")
    t.add_row("duplicate shapes", str(s["duplicate_shapes"]))
    console.print(t)
    _counted(rep)
    if rep.problems:
        show_problems(rep.problems, limit=50)
    exit_for(rep.problems)


@app.command()
def sim(
    out: Annotated[Path, typer.Argument(help="folder to write (images, native labels, manifest.jsonl)")],
    domain: Annotated[str, typer.Option(help="synthetic (FaceSynthetics layout) | real (300-W layout)")] = "synthetic",
    n: Annotated[int, typer.Option(help="number of faces")] = 2000,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 128,
    seed: int = 0,
    visual_gap: Annotated[float, typer.Option(help="0: synthetic images look real; 1: clean renders")] = 1.0,
    label_gap: Annotated[float, typer.Option(help="0: synthetic labels follow human semantics; 1: projected 3-D")] = 1.0,
    max_yaw: Annotated[float, typer.Option(
        help="yaw bound, degrees: synthetic uniform in ±this; real normal (sd this/3) clipped to ±this")] = 60.0,
    max_pitch: Annotated[float, typer.Option(
        help="pitch bound, degrees: synthetic uniform in ±0.7×this; real normal (sd this/3.5) clipped to ±this")] = 30.0,
    max_roll: Annotated[float, typer.Option(
        help="roll bound, degrees: synthetic uniform in ±0.5×this; real normal (sd this/4) clipped to ±this")] = 30.0,
    split: Annotated[str, typer.Option(help="split name written into the records")] = "",
    workers: Annotated[int, typer.Option(help="processes (0: all cores)")] = 0,
    preview: Annotated[Path | None, typer.Option(help="also draw a contact sheet of both domains here")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing OUT")] = False,
) -> None:
    """Simulate faces with a known domain gap and label gap (the embedded default data)."""
    import os

    from gapkit.sim import SimConfig, contact_sheet, generate

    with job_errors():
        cfg = SimConfig(domain=domain, n=n, size=size, seed=seed, visual_gap=visual_gap, label_gap=label_gap,
                        max_yaw=max_yaw, max_pitch=max_pitch, max_roll=max_roll, split=split)
        if preview:
            contact_sheet(preview, cfg, overwrite=overwrite)
            console.print(f"[green]wrote[/green] contact sheet {preview}")
        with progress_bar(f"simulating {domain}") as bar:
            task = bar.add_task("", total=n)
            manifest = generate(out, cfg, workers=workers or os.cpu_count() or 1, overwrite=overwrite,
                                progress=lambda k: bar.advance(task, k))
    console.print(f"[green]wrote[/green] {n} {domain} faces to {out} [dim](manifest: {manifest})[/dim]")


def _int_list(text: str | None, what: str) -> list | None:
    if text is None:
        return None
    try:
        return [v if v == "all" else int(v) for v in (p.strip() for p in text.split(",")) if v]
    except ValueError:
        raise typer.BadParameter(f"{what}: comma-separated integers{' or all' if what == '--n-real' else ''}, "
                                 f"got {text!r}") from None


@app.command()
def benchmark(
    config: Annotated[Path | None, typer.Option(help="bench.toml for your data [default: the built-in simulator]")] = None,
    name: Annotated[str | None, typer.Option(help="run name: results go to OUT/NAME")] = None,
    out: Annotated[Path, typer.Option(help="folder for runs")] = Path("runs"),
    quick: Annotated[bool, typer.Option(help="a smoke test: a tiny grid, no findings")] = False,
    fresh: Annotated[bool, typer.Option(help="discard finished cells instead of resuming")] = False,
    steps: Annotated[int | None, typer.Option(help="training steps per model (overrides [train] steps)")] = None,
    size: Annotated[int | None, typer.Option(help="crop side in pixels (overrides [train] size)")] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds, e.g. 0,1,2")] = None,
    n_real: Annotated[str | None, typer.Option("--n-real", help="comma-separated N_real values, e.g. 10,50,all")] = None,
    strategies: Annotated[str | None, typer.Option(help="comma-separated strategies to run (an unknown "
                                                        "name lists the known ones)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads [default: the cores this process may use]")] = None,
    detector_boxes: Annotated[bool | None, typer.Option(
        "--detector-boxes/--label-boxes", help="also score test faces cropped from the config's face_detector "
                                               "(missed faces counted) [default: the config's detector_boxes]")] = None,
    selection: Annotated[str | None, typer.Option(help="comma-separated policies choosing each cell's real faces "
                                                       "(random, diverse, uncertain; list with the config's "
                                                       "selection_list) [default: the config's, random]")] = None,
    ray: Annotated[str | None, typer.Option(help="run the cells as Ray tasks: auto (join a running cluster, "
                                                 "else start a local one), local, or a cluster ADDRESS")] = None,
) -> None:
    """Train one detector in each strategy's way over an N_real sweep; report NME, CED and
    real-image equivalence."""
    import os

    from gapkit.bench import BenchConfig, default_config, override, run, run_folder
    from gapkit.devices import set_threads

    with job_errors():
        picks = dict(steps=steps, size=size, seeds=_int_list(seeds, "--seeds"), n_real=_int_list(n_real, "--n-real"),
                     strategies=[p.strip() for p in strategies.split(",")] if strategies else None,
                     detector_boxes=detector_boxes,
                     selection=[p.strip() for p in selection.split(",")] if selection else None)
        base = BenchConfig.from_toml(config) if config is not None else None
        folder, done = run_folder(out, name, base.name if base else None, quick, fresh)
        if base is None:
            with progress_bar("simulating the default data") as bar:
                task = bar.add_task("", total=None)
                base = default_config(out / "default-sim-data" / ("quick" if quick else "full"), quick=quick,
                                      workers=os.cpu_count() or 1, progress=lambda s, k: bar.advance(task, k))
            cfg = override(base, **picks)
        else:
            cfg = override(base, quick=quick, **picks)
        used = set_threads(threads)
        console.print(f"torch uses {used} CPU thread{'s' * (used != 1)}", highlight=False)
        if done:
            console.print(f"resuming {folder}: {done} cells already finished")
        with progress_bar("training") as bar:
            task = bar.add_task("", total=cfg.train.steps)

            def step(key: str, s: int, n: int) -> None:
                bar.update(task, completed=s, total=n, description=key)

            # library messages hold ids, paths and names like "real_only [diverse]": never markup
            paths = run(cfg, folder, log=lambda m: console.print(m, highlight=False, markup=False), progress=step,
                        smoke=quick, ray=ray)
    console.print((folder / "report.md").read_text(), highlight=False, markup=False)
    console.print("[green]wrote[/green] " + ", ".join(str(p) for p in paths))


@app.command()
def schemes(name: Annotated[str | None, typer.Argument(help="show one scheme in full")] = None) -> None:
    """List landmark schemes and the deterministic mappings between them."""
    from gapkit.schemes import get_scheme, mappings, scheme_names

    try:
        if name:
            s = get_scheme(name)
            console.print(f"[bold]{s.name}[/bold] ({s.num_points} points, {s.contour_semantics}): {s.description}")
            for g, idx in s.groups.items():
                console.print(f"  {g}: {idx[0]}..{idx[-1]} ({len(idx)})" if idx == list(range(idx[0], idx[-1] + 1))
                              else f"  {g}: {idx}")
            console.print(f"  normalisers: {', '.join(s.normalisers)} (default {s.default_normaliser})")
            return
    except GapkitError as exc:
        fail(exc)
    t = Table(title="landmark schemes")
    for col in ("scheme", "K", "contour", "normalisers"):
        t.add_column(col, no_wrap=True)
    t.add_column("description", overflow="fold", ratio=1)  # wrapped at words, never cut
    for n in scheme_names():
        s = get_scheme(n)
        t.add_row(n, str(s.num_points), s.contour_semantics, ", ".join(s.normalisers), s.description)
    console.print(t)
    m = Table(title="mappings (gapkit convert --scheme TARGET [--mapping NAME])")
    for col in ("mapping", "from", "to", "kind"):
        m.add_column(col)
    for mp in mappings().values():
        m.add_row(mp.name, mp.source, mp.target, mp.status)
    console.print(m)


@app.command()
def formats(name: Annotated[str | None, typer.Argument(help="show one format's options in full")] = None) -> None:
    """List the formats gapkit reads and writes, what they store and their -O options."""
    from rich.markup import escape

    from gapkit.formats import FORMATS, info
    from gapkit.formats.common import CAPABILITIES

    if name:
        with job_errors():
            fi = info(name)
        console.print(f"[bold]{fi.name}[/bold]: {escape(fi.about)}", highlight=False)
        console.print(f"  reads {escape(fi.looks_for)}" + (f"; files ending {', '.join(fi.files)}" if fi.files else ""),
                      highlight=False)
        console.print("  stores: " + (", ".join(CAPABILITIES[c] for c in sorted(fi.stores)) or "points only"))
        if fi.labels_only:
            console.print("  reads labels without the images too (--no-images)")
        for side, flag, opts in (("read", "-O", fi.read_options), ("write", "-W", fi.write_options)):
            for k, v in opts.items():
                console.print(f"  {side} {flag} {k}=...: {escape(v)}", highlight=False)
        return
    t = Table(title="formats (gapkit formats NAME: options in full)")
    for col in ("format", "write", "files"):
        t.add_column(col, no_wrap=True)
    for col in ("about", "stores", "-O / -W options"):
        t.add_column(col, overflow="fold")
    for fname, mod in FORMATS.items():
        fi = mod.INFO
        t.add_row(fname, "yes" if hasattr(mod, "write") else "-", " ".join(fi.files) or "folder",
                  escape(fi.about), ", ".join(sorted(fi.stores)) or "-",
                  ", ".join([*fi.read_options, *(f"{k} (write)" for k in fi.write_options)]) or "-")
    console.print(t)


@app.callback(invoke_without_command=True)
def main(version: Annotated[bool, typer.Option("--version", help="print the version")] = False) -> None:
    if version:
        console.print(f"gapkit {__version__}")
        raise typer.Exit()


if __name__ == "__main__":  # pragma: no cover
    app()
