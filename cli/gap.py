"""`gapkit gap report`: the label, pose and visual gaps between two face sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gapkit.cli.ui import NoImagesOpt, console, err, exit_for, job_errors, progress_bar, show_problems

app = typer.Typer(help="Measure and draw the gaps between two face sets (A: synthetic, B: real).",
                  no_args_is_help=True)


@app.command()
def report(
    a: Annotated[Path, typer.Option("--a", help="set A: manifest or format folder (typically synthetic)")],
    b: Annotated[Path, typer.Option("--b", help="set B: manifest or format folder (typically real)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for report.md, gap.json and the figures")],
    from_a: Annotated[str | None, typer.Option(help="format of A (guessed when left out)")] = None,
    from_b: Annotated[str | None, typer.Option(help="format of B (guessed when left out)")] = None,
    split_a: Annotated[list[str] | None, typer.Option(help="keep only these splits of A (repeatable)")] = None,
    split_b: Annotated[list[str] | None, typer.Option(help="keep only these splits of B (repeatable)")] = None,
    name_a: Annotated[str, typer.Option(help="A's name in the report")] = "A",
    name_b: Annotated[str, typer.Option(help="B's name in the report")] = "B",
    adapter: Annotated[Path | None, typer.Option(help="a .gka adapter A -> B: show the label gap before and after")] = None,
    backbone: Annotated[Path | None, typer.Option(help="a benchmark detector (models/*.gkm) for visual features "
                                                       "[default: handcrafted features]")] = None,
    visual: Annotated[bool, typer.Option(help="measure the visual gap (reads every image)")] = True,
    max_faces: Annotated[int | None, typer.Option(help="a seeded sample of at most this many faces per set")] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto, for --adapter and --backbone")] = "cpu",
    overwrite: Annotated[bool, typer.Option(help="replace an existing report in OUT")] = False,
    no_images: NoImagesOpt = False,
) -> None:
    """Label gap (pose-matched offsets, Fréchet, MMD, modes), pose gap (solvePnP yaw/pitch/roll) and
    visual gap (image statistics, domain-classifier AUC, Fréchet) between A and B."""
    from gapkit.devices import resolve_device
    from gapkit.gap import GapOptions, gap_report, table_rows

    with job_errors():
        if no_images and visual:
            err.print("--no-images: the visual gap needs the pixels, so only the label and pose gaps are measured")
        opts = GapOptions(adapter=adapter, backbone=backbone, visual=visual and not no_images, max_faces=max_faces,
                          seed=seed, device=resolve_device(device), labels_only=no_images)
        with progress_bar("gap report") as bar:
            task = bar.add_task("", total=None)
            res = gap_report(a, b, out, a_fmt=from_a, b_fmt=from_b, a_splits=split_a, b_splits=split_b,
                             names=(name_a, name_b), options=opts, overwrite=overwrite,
                             log=lambda s: bar.update(task, description=s), progress=lambda n: bar.advance(task, n))
    s = res.summary
    t = Table(title=f"gaps: {name_a} ({s['a']['n']} faces) against {name_b} ({s['b']['n']} faces)")
    t.add_column("gap")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for row in table_rows(s):  # each registered measure's rows, in the report's order
        t.add_row(*row)
    console.print(t)
    console.print(f"[green]wrote[/green] {out / 'report.md'}, gap.json and {len(res.files) - 2} figures")
    if res.problems:
        err.print(f"[yellow]skipped {len(res.problems)} bad inputs[/yellow] (listed in the report)")
        show_problems(res.problems)
    exit_for(res.problems)
