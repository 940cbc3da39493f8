"""The `rnntune` command line: one subcommand per capability, each a typed function from which
Typer derives the parser, the help and the defaults.

`local` holds what runs on this machine (train, run, resume, data, schema, models, promote,
serve), `remote` what talks to the job service or starts it (up, down, submit, status, logs,
cancel); `run` and `resume` are `tune.commands`, shared with the cluster entrypoint.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from service.cli import local, remote
from tune.commands import add_job_commands, command_app, exit_code, exits, finish

app = command_app("Train, search, track and serve recurrent models (RNN, LSTM, GRU).")
data_app = command_app("Look at your own data before a job reads it.")


def _version(show: bool) -> None:
    if show:
        try:
            print(f"rnntune {version('rnntune')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("rnntune (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Train, search, track and serve recurrent models (RNN, LSTM, GRU)."""


app.command("train")(exits(local.train))
add_job_commands(app)
app.add_typer(data_app, name="data")
data_app.command("inspect")(exits(local.data_inspect))
for fn in (local.schema, local.models, local.promote, local.serve, local.ui):
    app.command(fn.__name__)(exits(fn))
for fn in (remote.up, remote.down, remote.submit, remote.status, remote.logs, remote.cancel):
    app.command(fn.__name__)(exits(fn))


def main(argv: list[str] | None = None) -> int:
    return exit_code(app, argv, "rnntune")


def console() -> int:
    """The `rnntune` command: `main`, ended quickly once a job has run (`tune.commands.finish`)."""
    return finish(main())
