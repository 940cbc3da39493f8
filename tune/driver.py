"""The job driver: MLflow parent run, Ray Tune search, child runs, registration, summary.

`rnntune run SPEC` runs it with an embedded local Ray; `python -m tune run SPEC` (what the job
service submits) connects to the cluster in `RAY_ADDRESS`. The search itself is built in
`tune.tuner`, the end of the job (figures, registration, outcome) is `tune.finish`.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from mlflow.tracking import MlflowClient
from ray import tune as ray_tune

from tune import outcome as O
from tune.backfill import backfill
from tune.cluster import ensure_ray
from tune.compat import framework_settings
from tune.console import LiveView
from tune.finish import OpenJob, close_parent_anyway, finish
from tune.parent_run import dataset_input, existing_trial_runs, open_parent_run
from tune.policy import Policy
from tune.protocol import adapt, read_plan, search_time_budget
from tune.registry import claim_model_name, job_user
from tune.space import searching_line, trial_count
from tune.spec import JobSpec, new_job_id, with_absolute_data_paths
from tune.storage import Storage, resolve_storage, save_spec
from tune.summary import JobSummary
from tune.system_metrics import start_system_metrics
from tune.timing import JobClock, log_timing
from tune.tracking import setup_tracking
from tune.trial_logger import MlflowTrialLogger
from tune.tuner import build_tuner

STOP_DRAIN_S = 30.0  # a stopped or crashed job waits this long for MLflow to take its last writes


def run_job(
    spec: JobSpec,
    job_id: str | None = None,
    resume: bool = False,
    verbose: bool = False,
    started_at: float | None = None,
) -> JobSummary:
    """Run (or resume) a search job end to end; returns what the summary prints. `verbose`:
    Tune's own trial tables instead of the live view (tune/console.py). `started_at`: when the
    job started (`time.time()`; default now), what `budget.time_budget_s` counts from."""
    clock = JobClock(started=started_at or time.time())
    clock.phases["imports"] = clock.elapsed()  # the process's start to here
    framework_settings(verbose)
    job, storage, dataset = _open(with_absolute_data_paths(spec), job_id or new_job_id(spec), clock)
    known = existing_trial_runs(job.client, job.tracking, job.parent)
    callback = MlflowTrialLogger(job.tracking, job.spec, job.job_id, job.parent, known, dataset)
    with clock.phase("ray_start"):
        ensure_ray(log_level=logging.INFO if verbose else logging.WARNING, warm=True)
    search_budget = search_time_budget(job.spec, clock.elapsed())
    live = None if verbose else LiveView(job.spec, callback, search_budget_s=search_budget)
    system = start_system_metrics(job.client, job.parent, callback.writer.submit)
    searching = True
    try:
        warm_up = WarmUpForTheEnd(trial_count(job.spec), search_budget)
        callbacks = [callback, *([live] if live else []), warm_up]
        tuner = build_tuner(
            job.spec, job.job_id, storage, callbacks, resume, verbose, search_budget
        )
        clock.search_start = time.time()
        with clock.phase("search"):
            results = tuner.fit()
        clock.search_end = time.time()
        searching = False
        system.stop()
        if live:
            live.close()
        return _after_search(job, callback, results, resume, search_budget)
    except BaseException as e:  # stopped (SIGTERM from `rnntune cancel`, Ctrl-C) or crashed,
        # in the search or after it (testing, registering): the runs end with the cause
        system.stop(wait=0)  # a stopped job's seconds are for closing its runs
        instead = _end_early(job, callback, e, searching)
        if instead is None:
            raise
        raise instead from e
    finally:
        callback.close()


def _open(spec: JobSpec, job_id: str, clock: JobClock) -> tuple[OpenJob, Storage, object]:
    """Checks, opens the store, reads the data, opens the parent run and says what will run:
    (the job, its storage, its data as an MLflow dataset input)."""
    policy = Policy.configured()
    if policy is not None:  # on a cluster: whatever the spec came through, before touching it
        policy.check(spec, on_cluster=True)
    with clock.phase("tracking"):  # the store opened, the model name claimed
        storage = resolve_storage(spec.storage.url)
        tracking = setup_tracking(spec, storage.local_root)
        client = MlflowClient(tracking.uri)
        if spec.registry.enabled:  # another user's model name fails now, not after the search
            claim_model_name(client, spec.registry.model_name or spec.name, job_user())
    with clock.phase("data"):
        plan = read_plan(spec)  # unusable data fails here, in one line, before any trial
        spec, protocol = adapt(spec, plan)  # data-sized defaults, where the spec left them out
        dataset = dataset_input(spec)
    with clock.phase("parent_run"):
        parent = open_parent_run(client, tracking, spec, job_id, dataset)
    save_spec(storage, job_id, spec)
    notes = spec.ignored_settings()  # said once, by name, and kept on the parent run
    for note in notes:
        print(f"rnntune: note: {note}", file=sys.stderr)
    if notes:
        client.set_tag(parent, "rnntune.ignored_settings", "\n".join(notes)[:5000])
    said = [*protocol.notes, searching_line(spec)]
    for line in said:  # the job's own console output (stderr is for what went wrong)
        print(f"rnntune: {line}", file=sys.stderr if line.startswith("warning") else sys.stdout)
    client.set_tag(parent, "rnntune.protocol", "\n".join(said)[:5000])
    if plan is not None:
        client.log_param(parent, "validation", plan.describe().split(":")[0][:500])
    return OpenJob(spec, job_id, tracking, client, parent, clock), storage, dataset


def _after_search(
    job: OpenJob, callback: MlflowTrialLogger, results, resume: bool, budget: float | None
) -> JobSummary:
    # A trial still running when a budgeted search returns was cut by the budget (Tune scores
    # it as it was); waits for MLflow if it is down: every write delivered
    with job.clock.phase("close_runs"):
        if budget is not None:
            callback.close_unfinished(stopped_by="time budget", end=O.BUDGET_STOPPED)
        else:
            callback.close_unfinished()
    if resume and (n := backfill(callback.client, callback.runs, job.spec, results)):
        print(f"rnntune: logged {n} metric points the interrupted driver had not sent")
    lost = callback.writer.lost + len(callback.writer.parked)
    summary = finish(job, results, callback.ends, callback.runs, lost)
    summary.timing = job.clock.split(budget, job.spec, len(results))
    log_timing(job.client, job.parent, summary.timing)
    return summary


def _end_early(
    job: OpenJob, callback: MlflowTrialLogger, e: BaseException, searching: bool
) -> BaseException | None:
    """Closes the runs of a job stopped or failed by `e`, with the job's outcome and first cause;
    returns the exception to raise instead of `e`, if any."""
    stopped = isinstance(e, KeyboardInterrupt | SystemExit)
    try:
        callback.close_unfinished(
            stopped_by="job stopped" if stopped else "job failed", timeout=STOP_DRAIN_S
        )
    finally:
        error = O.exception_line(f"{type(e).__name__}: {e}")
        # Tune itself broke after trials had failed (it cannot read back what a full disk
        # truncated): the trials' failure is the first cause, Tune's error a consequence
        consequence = searching and not stopped and O.first_failure(callback.ends)
        cause = "" if stopped or consequence else error
        end = O.decide(callback.ends, usable=False, stopped=stopped, cause=cause)
        close_parent_anyway(job.client, job.parent, end, job.tracking)
        print(end.line(), flush=True)
    if consequence:
        return O.JobFailed(f"then the search itself failed: {error}")
    if stopped:  # our SIGTERM handler's exit code does not survive Ray's C++ calls
        return SystemExit(O.EXIT_CODE[O.STOPPED])  # (it re-raises SystemExit(1))
    return None


class WarmUpForTheEnd(ray_tune.Callback):
    """Imports what registering the winner needs (torch, Lightning) on a thread while the last
    trials run: once every trial has started, or `LEAD_S` before the search's time budget ends.
    The job's start did not wait for it (tune.trials), its end does not either, and the first
    trials do not share the CPUs with it (on 2 cores, importing at the search's start made 40
    tiny trials cost ~0.05 s more each: bench/fixed_cost.py)."""

    LEAD_S = 15.0

    def __init__(self, trials: int | None, search_budget_s: float | None) -> None:
        self.trials = trials  # tune.space.trial_count: None until the budget is spent
        self.late = None if search_budget_s is None else time.monotonic() + search_budget_s
        self.thread: threading.Thread | None = None

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self.thread is not None:
            return
        all_started = (
            self.trials is not None
            and len(trials) >= self.trials
            and not any(t.status == "PENDING" for t in trials)
        )
        if all_started or (self.late is not None and time.monotonic() > self.late - self.LEAD_S):
            self.thread = threading.Thread(target=_import_training_stack, daemon=True)
            self.thread.start()


def _import_training_stack() -> None:
    import deploy.bundle.pyfunc  # noqa: F401
    import lightning_modules.training  # noqa: F401
