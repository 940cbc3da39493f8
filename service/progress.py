"""A job's progress as MLflow records it: trials by how they ended, best metric, outcome."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from tune import outcome as O

RUNNING = "running"
# A child run with no end tag (an older job, or one still running) by its MLflow status.
END_OF_STATUS = {"FINISHED": O.COMPLETED, "KILLED": O.INTERRUPTED, "FAILED": O.ERROR}


@dataclass
class Progress:
    parent_run_id: str | None = None
    experiment_id: str | None = None
    trials: dict[str, int] = field(default_factory=dict)
    best_metric: float | None = None
    champion_decision: str | None = None
    outcome: str | None = None  # set when the driver ended the job (tune.outcome's names)
    cause: str | None = None  # the first real cause of a failure, one line


def trial_state(status: str, tags: dict[str, str]) -> str:
    if status in ("RUNNING", "SCHEDULED"):
        return RUNNING
    end = tags.get(O.TRIAL_END_TAG)
    return end if end in O.TRIAL_ENDS else END_OF_STATUS.get(status, RUNNING)


def job_progress(
    tracking_uri: str,
    experiment_name: str,
    metric: str,
    mode: str,
    job_id: str,
    experiment_id: str | None = None,
) -> Progress:
    """Looks the job's parent run up by its job-id tag; empty before the driver opened it.

    One MLflow request when the experiment's id is known from an earlier look (each request
    to an MLflow behind basic auth costs a password check, ~0.2 s), two before.
    """
    client = MlflowClient(tracking_uri)
    if experiment_id is None:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            return Progress()
        experiment_id = experiment.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{O.JOB_TAG}` = '{job_id}'",
        max_results=5000,
    )
    parents = [r for r in runs if O.PARENT_TAG not in r.data.tags]
    if not parents:
        return Progress(experiment_id=experiment_id)
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(O.PARENT_TAG) == parent.info.run_id]
    trials = {RUNNING: 0, **{end: 0 for end in O.TRIAL_ENDS}}
    values = []
    for run in children:
        trials[trial_state(run.info.status, run.data.tags)] += 1
        value = run.data.metrics.get(metric)
        if value is not None and math.isfinite(value):
            values.append(value)
    best = parent.data.metrics.get(f"best_{metric}")
    if best is None and values:
        best = max(values) if mode == "max" else min(values)
    return Progress(
        parent_run_id=parent.info.run_id,
        experiment_id=experiment_id,
        trials=trials,
        best_metric=best,
        champion_decision=parent.data.tags.get("champion_decision"),
        outcome=parent.data.tags.get(O.OUTCOME_TAG),
        cause=parent.data.tags.get(O.CAUSE_TAG),
    )
