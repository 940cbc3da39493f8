"""The job commands, `run SPEC` and `resume JOB`: what `python -m tune` and `rnntune` both run.

Each command is a typed function; Typer derives its parser, help and defaults. They live here,
beside the driver, so the cluster entrypoint needs nothing from the service package;
`service.cli` adds the same functions to `rnntune`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer

from tune.spec import DEFAULT_STORAGE

JOBS_RUN: list[int] = []  # exit codes of the jobs this process ran (`exit_after_job`)


def command_app(help_text: str) -> typer.Typer:
    """A Typer app with plain (not rich) help and errors, and no completion commands."""
    return typer.Typer(
        help=help_text,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def exits(fn: Callable[..., int]) -> Callable[..., None]:
    """A command function -> a Typer command: errors become `guarded`'s one line and exit code."""

    @functools.wraps(fn)
    def command(*args, **kwargs) -> None:
        code = guarded(fn, *args, **kwargs)
        if code:
            raise typer.Exit(code)

    return command


def run(
    spec: Annotated[str, typer.Argument(help="the job spec, YAML or JSON (see examples/)")],
    job_id: Annotated[
        str | None, typer.Option(help="the job's id  [default: a new one, printed]")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Tune's own trial tables instead of the live view")
    ] = False,
) -> int:
    """Run a search job: trials on Ray (embedded, or the cluster in RAY_ADDRESS), tracked in
    MLflow, the best model registered."""
    from tune.spec import load_job_spec

    job = load_job_spec(spec)  # validate before the slow imports (Ray, torch)
    from tune.cluster import start_early
    from tune.space import trial_count

    # Ray starts (or the warm one is found) while we import
    start_early(logging.INFO if verbose else logging.WARNING, warm=True, trials=trial_count(job))
    from tune.driver import run_job
    from tune.protocol import process_start
    from tune.summary import format_summary

    # budget.time_budget_s counts from this process's start: what the user waits for
    summary = run_job(job, job_id=job_id, verbose=verbose, started_at=process_start())
    print(format_summary(summary))
    JOBS_RUN.append(summary.outcome.exit_code)
    return summary.outcome.exit_code


def resume(
    job_id: Annotated[str, typer.Argument(help="the id the interrupted job printed")],
    storage: Annotated[str, typer.Option(help="the job's storage URL")] = DEFAULT_STORAGE,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Tune's own trial tables instead of the live view")
    ] = False,
) -> int:
    """Resume an interrupted job from its storage; it continues the same MLflow parent run."""
    from tune.driver import run_job
    from tune.storage import load_stored_spec
    from tune.summary import format_summary

    job = load_stored_spec(storage, job_id)
    summary = run_job(job, job_id=job_id, resume=True, verbose=verbose)
    print(format_summary(summary))
    JOBS_RUN.append(summary.outcome.exit_code)
    return summary.outcome.exit_code


def add_job_commands(app: typer.Typer) -> None:
    app.command("run")(exits(run))
    app.command("resume")(exits(resume))


def guarded(fn: Callable[..., int], *args, **kwargs) -> int:
    """Run a command; bad input becomes a message and exit code 2, never a traceback."""
    from lightning_modules.config import SpecError
    from tune.outcome import EXIT_CODE, FAILED, JobFailed
    from tune.policy import PolicyViolation

    try:
        return fn(*args, **kwargs)
    except JobFailed as e:  # the outcome line is out already
        return _say(e, EXIT_CODE[FAILED])
    except SpecError as e:
        return _say(f"invalid spec{f' {e.source}' if e.source else ''}:\n{e}", 2)
    except PolicyViolation as e:
        problems = "\n".join(f"{f}: {m}" for f, m in e.problems)
        return _say(f"refused by the cluster's policy:\n{problems}", 2)
    except (FileNotFoundError, PermissionError, ValueError, RuntimeError) as e:
        return _say(e, 2)
    except KeyboardInterrupt:
        return _say("interrupted", 130)
    except BrokenPipeError:  # `rnntune schema | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    except OSError as e:  # the machine, not the input: a full disk, read-only storage
        return _say(e, 1)
    except Exception as e:  # noqa: BLE001 - e.g. MLflow/Ray errors: one line, not a traceback
        if type(e).__name__ in ("MlflowException", "RestException"):
            return _say(e, 2)
        raise


def _say(message: object, code: int) -> int:
    print(f"rnntune: {message}", file=sys.stderr)
    return code


def finish(code: int) -> int:
    """A console entry's end: after a job ran to its summary, a quick exit
    (`tune.cluster.exit_after_job`); after Arrow read data, a quick exit too (`quick_exit`);
    otherwise `code`, for `sys.exit`."""
    if JOBS_RUN:
        from tune.cluster import exit_after_job

        exit_after_job(code)
    if "pyarrow" in sys.modules:
        # a Parquet reader's threads can outlive the interpreter's teardown and abort the
        # process after its work is done ("terminate called without an active exception",
        # exit -6; apache/arrow#34314, open): seen once in `rnntune data inspect`'s error exit.
        # Non-daemon threads are waited for first, as the interpreter's own exit does
        import threading

        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        quick_exit(code)
    return code


def quick_exit(code: int) -> NoReturn:
    """Out of the process after the exit handlers ran and the output is flushed, without the
    interpreter's own teardown of modules and threads."""
    import atexit

    atexit._run_exitfuncs()  # what a normal exit runs (servers stopped, temp files removed)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def exit_code(app: typer.Typer, argv: list[str] | None, prog: str) -> int:
    """Run `app` on `argv` and return its exit code (for console scripts and in-process tests)."""
    try:
        app(args=argv, prog_name=prog)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0
