"""The trial logger against a real (embedded SQLite) MLflow store: batching, resume, statuses."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from tune import tracking as tracking_module
from tune.spec import parse_job_spec
from tune.tracking import MlflowTrialLogger, TrialRuns, open_parent_run, setup_tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    spec = parse_job_spec(
        {"name": "tracking", "data": {"name": "digits"}, "storage": {"url": str(root)}}
    )
    tracking = setup_tracking(spec, root)  # creating the SQLite schema takes seconds: once
    return spec, tracking, MlflowClient(tracking.uri)


def _logger(store, job_id: str, existing: dict[str, str] | None = None) -> MlflowTrialLogger:
    spec, tracking, client = store
    parent = open_parent_run(client, tracking, spec, job_id)
    return MlflowTrialLogger(tracking, spec, job_id, parent, TrialRuns(existing or {}, {}))


def _trial(trial_id: str, hidden_size: int = 24) -> Trial:
    return Trial("run_trial", config={"hidden_size": hidden_size}, stub=True, trial_id=trial_id)


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val_acc"))


def _wait(logger: MlflowTrialLogger) -> None:
    for ops in logger.pending.values():
        for op in ops:
            op.wait()


def test_epochs_are_batched_and_all_sent_by_the_trial_end(store):
    _, _, client = store
    logger, trial = _logger(store, "batched"), _trial("b_00000")
    logger.on_trial_start(0, [trial], trial)
    run_id = logger.runs[trial.trial_id]
    for epoch in (1, 2, 3):
        logger.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": epoch / 10})
    _wait(logger)
    assert _steps(client, run_id) == [1]  # the first epoch at once, the next two held back
    logger.on_trial_complete(0, [trial], trial)
    assert _steps(client, run_id) == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["hidden_size"] == "24"


def test_a_trial_that_stops_reporting_has_its_buffer_sent(store, monkeypatch):
    _, _, client = store
    logger, trial = _logger(store, "quiet"), _trial("q_00000")
    logger.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        logger.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": 0.5})
    logger.on_step_end(0, [trial])  # not yet due
    _wait(logger)
    run_id = logger.runs[trial.trial_id]
    assert _steps(client, run_id) == [1]
    monkeypatch.setattr(tracking_module, "FLUSH_EVERY_S", 0.0)  # as if FLUSH_EVERY_S had passed
    logger.on_step_end(1, [trial])
    _wait(logger)
    assert _steps(client, run_id) == [1, 2]


def test_resumed_trial_run_runs_again_with_its_params(store):
    """The killed driver had created the trial's run but not yet logged its params."""
    spec, tracking, client = store
    orphan = client.create_run(tracking.experiment_id).info.run_id
    client.set_terminated(orphan, "KILLED")  # closed by the killed driver's cleanup
    trial = _trial("r_00001", hidden_size=32)
    logger = _logger(store, "reopened", {trial.trial_id: orphan})
    logger.on_trial_start(0, [trial], trial)
    run = client.get_run(orphan)
    assert run.info.status == "RUNNING"
    assert run.data.params["hidden_size"] == "32"
    logger.on_trial_complete(0, [trial], trial)
    assert client.get_run(orphan).info.status == "FINISHED"
