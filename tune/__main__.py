"""Cluster entrypoint: `python -m tune run SPEC [--job-id ID]` or `python -m tune resume JOB`.

The only command the job service ever submits to Ray; it connects to `RAY_ADDRESS`.
"""

from __future__ import annotations

import argparse
import sys

from tune.cluster import exit_on_sigterm
from tune.commands import add_job_commands, cmd_resume, cmd_run, guarded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune")
    add_job_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    # Ray's stop_job sends SIGTERM (then SIGKILL after a few seconds): exit through Python so
    # the driver closes the job's MLflow runs as KILLED instead of leaving them RUNNING. Set
    # again once Ray has started (`ensure_ray`), which replaces it.
    exit_on_sigterm()

    if args.command == "run":
        return guarded(cmd_run, args.spec, args.job_id)
    return guarded(cmd_resume, args.job_id, args.storage)


if __name__ == "__main__":
    sys.exit(main())
