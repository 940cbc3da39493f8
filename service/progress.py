"""A job's progress as MLflow records it: trials by state, best metric, champion decision."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from tune.tracking import JOB_TAG, PARENT_TAG

# MLflow run status -> what the job view calls the trial.
TRIAL_STATE = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "done"}
TRIAL_STATE |= {"KILLED": "stopped", "FAILED": "failed"}


@dataclass
class Progress:
    parent_run_id: str | None = None
    experiment_id: str | None = None
    trials: dict[str, int] = field(default_factory=dict)
    best_metric: float | None = None
    champion_decision: str | None = None


def job_progress(
    tracking_uri: str, experiment_name: str, metric: str, mode: str, job_id: str
) -> Progress:
    """Looks the job's parent run up by its job-id tag; empty before the driver opened it."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return Progress()
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=5000
    )
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    if not parents:
        return Progress(experiment_id=experiment.experiment_id)
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    trials: dict[str, int] = {"done": 0, "running": 0, "stopped": 0, "failed": 0}
    values = []
    for run in children:
        trials[TRIAL_STATE.get(run.info.status, "running")] += 1
        value = run.data.metrics.get(metric)
        if value is not None and math.isfinite(value):
            values.append(value)
    best = parent.data.metrics.get(f"best_{metric}")
    if best is None and values:
        best = max(values) if mode == "max" else min(values)
    return Progress(
        parent_run_id=parent.info.run_id,
        experiment_id=experiment.experiment_id,
        trials=trials,
        best_metric=best,
        champion_decision=parent.data.tags.get("champion_decision"),
    )
