"""The trial logger against a real (embedded SQLite) MLflow store."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from tune.spec import parse_job_spec
from tune.tracking import MlflowTrialLogger, open_parent_run, setup_tracking


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
    return MlflowTrialLogger(tracking, spec, job_id, parent, existing or {})


def _trial(trial_id: str, hidden_size: int = 24) -> Trial:
    return Trial("run_trial", config={"hidden_size": hidden_size}, stub=True, trial_id=trial_id)


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
