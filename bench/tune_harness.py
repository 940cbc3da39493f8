"""What the Ray Tune benchmarks share: a quiet embedded Ray, timed jobs, per-trial results.

Used by bench/tune_packing.py, bench/tracking_overhead.py and bench/asha_vs_random.py. Ray
keeps its session files under the benchmark's own temporary folder (`RAY_TMPDIR`), not in
/tmp/ray next to other runs, and the driver's console output (Tune's progress table, Ray and
MLflow logs) goes to a log file; its tail is printed if a job fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import mlflow
import pytorch_lightning as pl
import ray
import torch
from ray import tune as ray_tune

import tune.driver
from lightning_modules.metrics import REPORTED
from tune.cluster import ensure_ray
from tune.driver import run_job
from tune.spec import JobSpec
from tune.storage import resolve_storage
from tune.summary import JobSummary
from tune.tracking import setup_tracking

# Loopback only, no usage stats, no auth token: a private single-machine Ray, as in the tests.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def silence_libraries() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning 2.6 on torch 2.13


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `log` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(log: Path, lines: int = 40) -> str:
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def start_ray(ray_tmp: Path, log: Path, num_cpus: int | None = None) -> float:
    """Start the embedded Ray (all cores) before any timing; returns the seconds it took.

    `ray_tmp` must be a short path: Ray's Unix sockets live under it (107-byte limit).
    """
    os.environ.update(RAY_ENV)
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    start = time.perf_counter()
    with quiet(log):
        ensure_ray(num_cpus)
    return time.perf_counter() - start


def stop_ray(log: Path) -> None:
    with quiet(log):
        ray.shutdown()


def prepare_tracking(spec: JobSpec, log: Path) -> None:
    """Create the job's MLflow store and experiment now, so the first timed job does not pay it."""
    with quiet(log):
        setup_tracking(spec, resolve_storage(spec.storage.url).local_root)


def timed_job(spec: JobSpec, log: Path) -> tuple[JobSummary, float]:
    """`run_job` with its console output in `log`; seconds of wall time, Ray already started."""
    start = time.perf_counter()
    try:
        with quiet(log):
            summary = run_job(spec)
    except BaseException:
        print(f"job {spec.name} failed; last lines of {log}:\n{log_tail(log)}", file=sys.stderr)
        raise
    wall = time.perf_counter() - start
    if summary.errors:
        raise RuntimeError(f"job {summary.job_id}: trial errors: {summary.errors}")
    return summary, wall


def trial_results(spec: JobSpec, job_id: str) -> dict[str, list[dict]]:
    """trial_id -> the rows its trial reported (Tune's result.json), from the job's local storage."""
    root = resolve_storage(spec.storage.url).local_root
    if root is None:
        raise ValueError("storage.url: the benchmarks read results from a local folder")
    out: dict[str, list[dict]] = {}
    for path in sorted((root / job_id).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


class NoTrialLogging(ray_tune.Callback):
    """Stands in for `MlflowTrialLogger`: same constructor, logs nothing (no child runs)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ends: dict = {}  # the driver reads how trials ended from the trial logger
        self.writer = SimpleNamespace(lost=0)  # and how many MLflow writes it lost

    def close_unfinished(self, stopped_by: str = "job", timeout: float | None = None) -> bool:
        return True


RECORDED = ("training_iteration", "time_total_s", "time_this_iter_s", "done", *REPORTED)


def recording(base: type[ray_tune.Callback], log: list[dict]) -> type[ray_tune.Callback]:
    """`base` (the trial logger or `NoTrialLogging`) that also appends what it sees to `log`.

    One row per trial start, result and completion, in the order the driver (and so the
    scheduler) saw them: `t` is the driver's clock (perf_counter seconds, finer than Tune's
    whole-second `timestamp`), `callback_s` the time `base`'s handler held the driver's loop.
    """

    class Recording(base):  # type: ignore[misc, valid-type]
        def _timed(self, event: str, trial, handler, row: dict) -> None:
            log.append({"event": event, "trial_id": trial.trial_id, "t": time.perf_counter()})
            log[-1].update(row)
            start = time.perf_counter()
            handler()
            log[-1]["callback_s"] = time.perf_counter() - start

        def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
            handler = super().on_trial_start
            self._timed("start", trial, lambda: handler(iteration, trials, trial, **info), {})

        def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info):
            handler = super().on_trial_result
            row = {k: result[k] for k in RECORDED if k in result}
            self._timed(
                "result", trial, lambda: handler(iteration, trials, trial, result, **info), row
            )

        def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
            handler = super().on_trial_complete
            self._timed("complete", trial, lambda: handler(iteration, trials, trial, **info), {})

    return Recording


def results_of(log: list[dict]) -> list[dict]:
    return [row for row in log if row["event"] == "result"]


@contextlib.contextmanager
def trial_logger(cls: type[ray_tune.Callback]) -> Iterator[None]:
    """Make `run_job` build `cls` where it builds its MLflow trial logger (this process only)."""
    with mock.patch.object(tune.driver, "MlflowTrialLogger", cls):
        yield


def versions() -> dict[str, str]:
    return {
        "ray": ray.__version__,
        "mlflow": mlflow.__version__,
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": sys.version.split()[0],
    }
