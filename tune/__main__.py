"""Cluster entrypoint: `python -m tune run SPEC [--job-id ID]` or `python -m tune resume JOB`.

The only command the job service ever submits to Ray; it connects to `RAY_ADDRESS`.
"""

from __future__ import annotations

import sys

from tune.cluster import exit_on_sigterm
from tune.commands import add_job_commands, command_app, exit_code, finish


def main(argv: list[str] | None = None) -> int:
    app = command_app("Run or resume a search job (what the job service submits to Ray).")
    add_job_commands(app)
    # Ray's stop_job sends SIGTERM (then SIGKILL after a few seconds): exit through Python so
    # the driver closes the job's MLflow runs as KILLED instead of leaving them RUNNING. Set
    # again once Ray has started (`ensure_ray`), which replaces it.
    exit_on_sigterm()
    return exit_code(app, argv, "python -m tune")


if __name__ == "__main__":
    sys.exit(finish(main()))
