"""Job progress from MLflow: trials counted by how they ended, the best metric, the parent's tags.

One real MLflow store on SQLite for the module (creating its tables takes seconds); each test
writes its runs under its own experiment.
"""

from __future__ import annotations

import itertools
import math

import pytest
from mlflow.tracking import MlflowClient

from service.progress import RUNNING, Progress, job_progress, trial_state
from tune import outcome as O

JOB = "job-20260101-000000-abcd"
_names = itertools.count()


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('progress') / 'm.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables once
    return uri


@pytest.fixture
def client(uri):
    return MlflowClient(uri)


@pytest.fixture
def experiment(client):
    name = f"exp{next(_names)}"
    client.create_experiment(name)
    return name


def _parent(client, experiment: str, job_id: str = JOB, **tags: str) -> str:
    exp = client.get_experiment_by_name(experiment).experiment_id
    return client.create_run(exp, tags={O.JOB_TAG: job_id, **tags}).info.run_id


def _child(
    client,
    experiment: str,
    parent: str,
    status: str = "RUNNING",
    end: str | None = None,
    value: float | None = None,
    job_id: str = JOB,
) -> str:
    exp = client.get_experiment_by_name(experiment).experiment_id
    tags = {O.JOB_TAG: job_id, O.PARENT_TAG: parent}
    if end is not None:
        tags[O.TRIAL_END_TAG] = end
    run = client.create_run(exp, tags=tags).info.run_id
    if value is not None:
        client.log_metric(run, "val_acc", value)
    if status == "SCHEDULED":
        client.update_run(run, status="SCHEDULED")
    elif status != "RUNNING":
        client.set_terminated(run, status)
    return run


@pytest.mark.parametrize(
    "status,tags,expected",
    [
        ("RUNNING", {}, RUNNING),
        ("SCHEDULED", {}, RUNNING),
        ("RUNNING", {O.TRIAL_END_TAG: O.COMPLETED}, RUNNING),  # a retry runs again
        ("FINISHED", {}, O.COMPLETED),
        ("FAILED", {}, O.ERROR),
        ("KILLED", {}, O.INTERRUPTED),
        ("FINISHED", {O.TRIAL_END_TAG: O.EARLY_STOPPED}, O.EARLY_STOPPED),
        ("FINISHED", {O.TRIAL_END_TAG: O.BUDGET_STOPPED}, O.BUDGET_STOPPED),
        ("FAILED", {O.TRIAL_END_TAG: O.DIVERGED}, O.DIVERGED),
        ("FINISHED", {O.TRIAL_END_TAG: "exploded"}, O.COMPLETED),  # unknown tag: by status
        ("UNKNOWN", {}, RUNNING),
    ],
)
def test_trial_state_reads_the_end_tag_then_the_status(status, tags, expected):
    assert trial_state(status, tags) == expected


def test_job_progress_of_a_missing_experiment_is_empty(uri):
    assert job_progress(uri, "no-such-experiment", "val_acc", "max", JOB) == Progress()


def test_job_progress_before_the_parent_run_names_only_the_experiment(uri, client, experiment):
    other = _parent(client, experiment, job_id="another-job")
    _child(client, experiment, other, job_id="another-job")
    progress = job_progress(uri, experiment, "val_acc", "max", JOB)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    assert progress == Progress(experiment_id=exp_id)
    assert progress.parent_run_id is None and progress.trials == {}


def test_job_progress_counts_trials_by_how_they_ended(uri, client, experiment):
    parent = _parent(client, experiment)
    _child(client, experiment, parent, "RUNNING")
    _child(client, experiment, parent, "SCHEDULED")
    _child(client, experiment, parent, "FINISHED", O.COMPLETED, 0.5)
    _child(client, experiment, parent, "FINISHED", O.EARLY_STOPPED, 0.3)
    _child(client, experiment, parent, "FINISHED", O.BUDGET_STOPPED, 0.4)
    _child(client, experiment, parent, "FAILED", O.DIVERGED)
    _child(client, experiment, parent, "FAILED")  # before end tags: by status
    _child(client, experiment, parent, "KILLED")
    progress = job_progress(uri, experiment, "val_acc", "max", JOB)
    assert progress.parent_run_id == parent
    assert progress.experiment_id == client.get_experiment_by_name(experiment).experiment_id
    assert progress.trials == {
        RUNNING: 2,
        O.COMPLETED: 1,
        O.EARLY_STOPPED: 1,
        O.BUDGET_STOPPED: 1,
        O.DIVERGED: 1,
        O.ERROR: 1,
        O.INTERRUPTED: 1,
    }


def test_job_progress_counts_every_end_even_when_none_happened(uri, client, experiment):
    _parent(client, experiment)
    progress = job_progress(uri, experiment, "val_acc", "max", JOB)
    assert progress.trials == {RUNNING: 0, **{end: 0 for end in O.TRIAL_ENDS}}
    assert progress.best_metric is None


@pytest.mark.parametrize("mode,best", [("max", 0.7), ("min", 0.2)])
def test_job_progress_best_metric_from_trials_follows_the_mode(uri, client, experiment, mode, best):
    parent = _parent(client, experiment)
    for value in (0.2, 0.7, 0.4):
        _child(client, experiment, parent, "FINISHED", O.COMPLETED, value)
    progress = job_progress(uri, experiment, "val_acc", mode, JOB)
    assert progress.best_metric == pytest.approx(best)


def test_job_progress_best_metric_skips_non_finite_values(uri, client, experiment):
    parent = _parent(client, experiment)
    _child(client, experiment, parent, "FAILED", O.DIVERGED, math.nan)
    _child(client, experiment, parent, "FINISHED", O.COMPLETED, 0.4)
    progress = job_progress(uri, experiment, "val_acc", "min", JOB)
    assert progress.best_metric == pytest.approx(0.4)
    only_nan = _parent(client, experiment, job_id="nan-job")
    _child(client, experiment, only_nan, "FAILED", O.DIVERGED, math.nan, job_id="nan-job")
    assert job_progress(uri, experiment, "val_acc", "min", "nan-job").best_metric is None


def test_job_progress_prefers_the_parent_best_metric(uri, client, experiment):
    parent = _parent(client, experiment)
    client.log_metric(parent, "best_val_acc", 0.55)  # the driver's summary: measured values only
    _child(client, experiment, parent, "FINISHED", O.COMPLETED, 0.9)
    assert job_progress(uri, experiment, "val_acc", "max", JOB).best_metric == pytest.approx(0.55)


def test_job_progress_reads_the_parent_outcome_cause_and_decision(uri, client, experiment):
    parent = _parent(
        client,
        experiment,
        **{
            O.OUTCOME_TAG: O.PARTIAL,
            O.CAUSE_TAG: "OSError: [Errno 30] Read-only file system",
            "champion_decision": "promoted: no champion yet",
        },
    )
    _child(client, experiment, parent, "FAILED", O.ERROR)
    progress = job_progress(uri, experiment, "val_acc", "max", JOB)
    assert progress.outcome == O.PARTIAL
    assert progress.cause == "OSError: [Errno 30] Read-only file system"
    assert progress.champion_decision == "promoted: no champion yet"
    running = _parent(client, experiment, job_id="still-running")
    unset = job_progress(uri, experiment, "val_acc", "max", "still-running")
    assert unset.parent_run_id == running
    assert unset.outcome is None and unset.cause is None and unset.champion_decision is None


def test_job_progress_ignores_other_jobs_runs(uri, client, experiment):
    parent = _parent(client, experiment)
    _child(client, experiment, parent, "FINISHED", O.COMPLETED, 0.3)
    other = _parent(client, experiment, job_id="other-job")
    _child(client, experiment, other, "FINISHED", O.COMPLETED, 0.99, job_id="other-job")
    _child(client, experiment, other, "FAILED", O.ERROR, job_id="other-job")
    progress = job_progress(uri, experiment, "val_acc", "max", JOB)
    assert progress.parent_run_id == parent
    assert progress.trials[O.COMPLETED] == 1 and progress.trials[O.ERROR] == 0
    assert progress.best_metric == pytest.approx(0.3)


def test_service_counts_trials_by_their_end_tag():
    assert trial_state("RUNNING", {}) == "running"
    assert trial_state("FINISHED", {O.TRIAL_END_TAG: "early_stopped"}) == "early_stopped"
    assert trial_state("FAILED", {O.TRIAL_END_TAG: "diverged"}) == "diverged"
    assert trial_state("FAILED", {}) == "error"  # a run from before end tags existed
    assert trial_state("KILLED", {}) == "interrupted"
