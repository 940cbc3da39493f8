"""The job commands, `run SPEC` and `resume JOB`: what `python -m tune` and `rnntune` both run.

They live here, beside the driver, so the cluster entrypoint needs nothing from the service
package; `service.cli` adds them to `rnntune` and reports its client's errors (RuntimeErrors) through the same `guarded`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tune.spec import DEFAULT_STORAGE


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    """`run SPEC [--job-id]` and `resume JOB [--storage]`."""
    p = sub.add_parser(
        "run",
        help="run a search job (embedded Ray, or the one in RAY_ADDRESS)",
    )
    p.add_argument("spec", help="the job spec (YAML or JSON; see examples/)")
    p.add_argument("--job-id", default=None, help="the job's id (default: a new one)")
    p = sub.add_parser(
        "resume",
        help="resume an interrupted job",
    )
    p.add_argument("job_id", help="the id the interrupted job printed")
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="the job's storage URL (default: %(default)s)"
    )


def cmd_run(spec_path: str, job_id: str | None = None) -> int:
    """Run a search job: trials on Ray, tracked in MLflow, best model registered."""
    from tune.spec import load_job_spec

    spec = load_job_spec(spec_path)  # validate before the slow imports (Ray, torch)
    from tune.driver import format_summary, run_job

    summary = run_job(spec, job_id=job_id)
    print(format_summary(summary))
    return summary.outcome.exit_code


def cmd_resume(job_id: str, storage: str) -> int:
    """Resume an interrupted job from its storage; continues the same MLflow parent run."""
    from tune.driver import format_summary, load_stored_spec, run_job

    spec = load_stored_spec(storage, job_id)
    summary = run_job(spec, job_id=job_id, resume=True)
    print(format_summary(summary))
    return summary.outcome.exit_code


def guarded(fn: Callable[..., int], *args) -> int:
    """Run a command; bad input becomes a message and exit code 2, never a traceback."""
    from lightning_modules.config import SpecError
    from tune.outcome import EXIT_CODE, FAILED, JobFailed
    from tune.policy import PolicyViolation

    try:
        return fn(*args)
    except JobFailed as e:  # the outcome line is out already
        return _say(e, EXIT_CODE[FAILED])
    except SpecError as e:
        return _say(f"invalid spec:\n{e}", 2)
    except PolicyViolation as e:
        problems = "\n".join(f"{f}: {m}" for f, m in e.problems)
        return _say(f"refused by the cluster's policy:\n{problems}", 2)
    except (FileNotFoundError, PermissionError, ValueError, RuntimeError) as e:
        return _say(e, 2)
    except KeyboardInterrupt:
        return _say("interrupted", 130)
    except OSError as e:  # the machine, not the input: a full disk, read-only storage
        return _say(e, 1)
    except Exception as e:  # noqa: BLE001 - e.g. MLflow/Ray errors: one line, not a traceback
        if type(e).__name__ in ("MlflowException", "RestException"):
            return _say(e, 2)
        raise


def _say(message: object, code: int) -> int:
    print(f"rnntune: {message}", file=sys.stderr)
    return code
