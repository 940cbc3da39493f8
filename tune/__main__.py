"""Cluster entrypoint: `python -m tune run SPEC [--job-id ID]` or `python -m tune resume JOB`.

The only command the job service ever submits to Ray; it connects to `RAY_ADDRESS`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tune")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a search job from a spec file")
    run.add_argument("spec")
    run.add_argument("--job-id", default=None)
    res = sub.add_parser("resume", help="resume an interrupted job")
    res.add_argument("job_id")
    res.add_argument("--storage", default="runs/tune", help="the job's storage URL")
    args = parser.parse_args(argv)

    from service.cli import cmd_resume, cmd_run, guarded

    if args.command == "run":
        return guarded(cmd_run, args.spec, args.job_id)
    return guarded(cmd_resume, args.job_id, args.storage)


if __name__ == "__main__":
    sys.exit(main())
