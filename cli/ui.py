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


@contextmanager
def job_errors() -> Iterator[None]:
    """--strict stops and gapkit's own errors become one line and an exit code; anything
    else is a bug and keeps its traceback."""
    try:
        yield
    except StrictStop as exc:
        err.print(f"[red]stopped (--strict):[/red] {exc.problem}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    except GapkitError as exc:
        fail(exc)


def fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def show_problems(problems: list, limit: int = 20) -> None:
    for p in problems[:limit]:
        err.print(f"  [yellow]skipped[/yellow] {p}", soft_wrap=True, highlight=False)
    if len(problems) > limit:
        err.print(f"  ... and {len(problems) - limit} more (see the report)")


ThreadsOpt = Annotated[int | None, typer.Option(help="torch CPU threads [default: the cores this process may use]")]
