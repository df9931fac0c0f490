"""Shared pieces of the command line: consoles, progress, and errors turned into exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from gapkit.errors import ConfigError, GapkitError, StrictStop

console = Console()
err = Console(stderr=True)

FromOpt = Annotated[str | None, typer.Option("--from", help="input format (guessed from SRC when left out)")]
OptionsOpt = Annotated[list[str] | None, typer.Option(
    "--opt", "-O", help="reader option KEY=VALUE, e.g. -O keypoints=dense, -O subset=common, -O images=DIR")]
WriteOptionsOpt = Annotated[list[str] | None, typer.Option(
    "--write-opt", "-W", help="writer option KEY=VALUE, e.g. -W images=copy (see `gapkit formats NAME`)")]
NoImagesOpt = Annotated[bool, typer.Option(
    "--no-images", help="read the labels only: no image is opened (sizes only where the file gives them)")]


def parse_opts(items: list[str] | None) -> dict:
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"option {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = {"true": True, "false": False}.get(v.lower(), int(v) if v.isdigit() else v)
    return out


def progress_bar(label: str) -> Progress:
    return Progress(SpinnerColumn(), TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


# Exit codes, the same for every command: 0 done; 1 done, but bad records were skipped (listed);
# 2 could not start (a usage or configuration error, an input that holds nothing of its format);
# 3 done, but gapkit itself failed on some records (an internal error, its traceback in the report).
EXIT_SKIPPED, EXIT_CANNOT_START, EXIT_INTERNAL = 1, 2, 3


@contextmanager
def job_errors() -> Iterator[None]:
    """--strict stops and gapkit's own errors become one line and an exit code; anything
    else is a bug and keeps its traceback."""
    try:
        yield
    except StrictStop as exc:
        err.print(f"[red]stopped (--strict):[/red] {exc.problem}", soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_INTERNAL if getattr(exc.problem, "kind", "bad") == "internal" else EXIT_SKIPPED) from None
    except GapkitError as exc:
        fail(exc)


def fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_CANNOT_START)


def exit_for(problems: list) -> None:
    """End a command that finished with ``problems``: 3 when gapkit failed on a record (a bug,
    not the input), 1 when only bad records were skipped, nothing (0) when there were none."""
    internal = [p for p in problems if getattr(p, "kind", "bad") == "internal"]
    if internal:
        err.print(f"[red]{len(internal)} records hit an internal error[/red] (a gapkit bug, not your data: "
                  "the report holds the tracebacks; please report it)")
        raise typer.Exit(EXIT_INTERNAL)
    if problems:
        raise typer.Exit(EXIT_SKIPPED)


def show_problems(problems: list, limit: int = 20) -> None:
    for p in problems[:limit]:
        err.print(f"  [yellow]skipped[/yellow] {p}", soft_wrap=True, highlight=False)
    if len(problems) > limit:
        err.print(f"  ... and {len(problems) - limit} more (see the report)")


ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads [default: the cores this process may use]")]
