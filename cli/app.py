"""`gapkit app`: build or refresh a FiftyOne dataset from face sets and serve the App."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from gapkit.cli.ui import console, err, job_errors, show_problems
from gapkit.errors import ConfigError


def _check_port(address: str, port: int) -> None:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise ConfigError(f"cannot serve on {address}:{port} ({exc.strerror}); is another App running? "
                             "Pass --port") from None


def app(
    manifest: Annotated[list[Path], typer.Option(
        "--input", "--manifest", "-i",
        help="face set: a manifest (.jsonl) or a dataset folder or file of any format; repeat to show sets together")],
    from_fmt: Annotated[list[str] | None, typer.Option(
        "--from", help="format of the inputs: one for all, or one per --input [default: guessed]")] = None,
    predictions: Annotated[list[str] | None, typer.Option(
        help="predictions manifest joined by face id, as PATH or FIELD=PATH (repeatable)")] = None,
    adapter: Annotated[Path | None, typer.Option(help="a .gka adapter: its output becomes the `adapted` field")] = None,
    scheme: Annotated[str | None, typer.Option(help="scheme of ground_truth [default: the first manifest's]")] = None,
    domain: Annotated[list[str] | None, typer.Option(
        help="domain of records that name none: one for all, or one per --input [default: their source]")] = None,
    name: Annotated[str | None, typer.Option(help="FiftyOne dataset name [default: gapkit-<manifest stem>]")] = None,
    port: Annotated[int, typer.Option(help="App port")] = 5151,
    address: Annotated[str, typer.Option(help="address the App listens on")] = "127.0.0.1",
    embeddings: Annotated[str, typer.Option(help="pca | tsne | umap | none: embeddings visualisations")] = "pca",
    launch: Annotated[bool, typer.Option(help="serve the App (--no-launch: only build the dataset)")] = True,
    selection: Annotated[Path | None, typer.Option(
        help="a selection list (gapkit select): its faces are tagged 'selected', ranked, in a saved view")] = None,
) -> None:
    """Build or refresh a persistent FiftyOne dataset with gap fields and saved views, and serve the App."""
    from gapkit.bench.selection import read_selection
    from gapkit.faceset import DataSource, open_source

    def per_input(values: list[str] | None, what: str) -> list[str | None]:
        if not values:
            return [None] * len(manifest)
        if len(values) == 1:
            return values * len(manifest)
        if len(values) != len(manifest):
            raise ConfigError(f"{len(values)} {what} values for {len(manifest)} inputs: give one, or one per --input")
        return values

    with job_errors():
        sources = [DataSource(path=m, format=f) for m, f in zip(manifest, per_input(from_fmt, "--from"), strict=True)]
        for src in sources:
            open_source(src)  # a missing input or an unknown format stops here, before FiftyOne starts
        domains = per_input(domain, "--domain")
        if launch:
            _check_port(address, port)
        with console.status("importing FiftyOne (starts its database)"):
            import gapkit.fiftyone as gfo
        ds_name = name or f"gapkit-{manifest[0].stem}"
        with console.status("building the dataset") as status:
            ds, problems = gfo.build_dataset(sources, ds_name, predictions=predictions, adapter=adapter, scheme=scheme,
                                             domain=domains, embeddings=None if embeddings == "none" else embeddings,
                                             selection=read_selection(selection) if selection else None,
                                             log=lambda s: status.update(f"building the dataset: {s}"))
    console.print(f"[green]dataset[/green] {ds.name}: {len(ds)} faces; fields "
                  + ", ".join(f for f in ds.get_field_schema() if f not in ("id", "filepath", "tags", "metadata",
                                                                            "created_at", "last_modified_at")))
    if problems:
        err.print(f"[yellow]skipped {len(problems)} bad records[/yellow]")
        show_problems(problems)
    if not launch:
        return
    session = gfo.launch(ds, address=address, port=port)
    console.print(f"App: [bold]{gfo.app_url(ds, address, port)}[/bold]")
    for view in ds.list_saved_views():
        console.print(f"  view [cyan]{view}[/cyan]: {gfo.app_url(ds, address, port, view)}")
    for key in ds.list_brain_runs():
        console.print(f"  embeddings [cyan]{key}[/cyan] (open the Embeddings panel, colour by domain)")
    console.print("Ctrl-C stops the App.", style="dim")

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and a plain kill both stop cleanly; SIGINT is set explicitly because a job started
    # in the background inherits it ignored.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping the App"):
            gfo.stop(session)
    console.print("App stopped.")
