"""A search on the user's own Parquet file: tracked as an MLflow dataset, registered, served."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.data.sequence_files import DataFileError
from tests.support.sequence_data import CLASSES, sensor_sequences, write_parquet
from tune.driver import run_job
from tune.outcome import PARENT_TAG, TRIAL_END_TAG
from tune.protocol import final_reserve
from tune.spec import parse_job_spec

pytestmark = pytest.mark.slow


def _spec(mlflow_url: str, tmp_path, url: str):
    return parse_job_spec(
        {
            "name": "sensors",
            "data": {"name": "sequences", "url": url},
            "model": {"cell_type": "gru", "hidden_size": 24, "bidirectional": True},
            "optim": {"batch_size": 32, "grad_clip": 2.0},
            "search_space": {"lr": {"grid": [0.01, 0.005]}},
            "search": {"algorithm": "grid", "num_samples": 1},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": 12},
            "storage": {"url": str(tmp_path / "store")},
            "tracking": {"uri": mlflow_url, "experiment": "sequences-tests"},
            "registry": {"model_name": "sensors-test"},
        }
    )


@pytest.fixture(scope="module")
def sensor_job(ray_local, mlflow_server, tmp_path_factory):
    """The job's data URL is relative: trials run in their own working directories."""
    tmp = tmp_path_factory.mktemp("sensors")
    xs, labels, _ = sensor_sequences(n=300, seed=1)
    write_parquet(tmp / "data" / "sensors.parquet", xs, labels)
    mp = pytest.MonkeyPatch()
    mp.chdir(tmp)
    try:
        summary = run_job(_spec(mlflow_server, tmp, "data/sensors.parquet"))
    finally:
        mp.undo()
    return summary


def test_search_on_user_parquet_learns_and_registers(sensor_job):
    assert sensor_job.trials == 2 and sensor_job.trial_states == {"completed": 2}
    assert sensor_job.best_metric > 0.8
    assert sensor_job.registration is not None and sensor_job.registration.test_value > 0.75


def test_dataset_logged_on_parent_and_children_with_the_registry_digest(sensor_job, mlflow_server):
    client = MlflowClient(mlflow_server)
    parent = client.get_run(sensor_job.parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )
    reg = sensor_job.registration
    version = client.get_model_version(reg.model_name, reg.version)
    digest = version.tags["data_fingerprint"]
    for run in [parent, *children]:
        datasets = [d.dataset for d in run.inputs.dataset_inputs]
        assert any(d.digest == digest and d.name == "sequences" for d in datasets), datasets
    logged = next(d.dataset for d in parent.inputs.dataset_inputs if d.dataset.digest == digest)
    assert '"num_rows": 300' in logged.profile and "sensors.parquet" in logged.source
    assert "sequence" in logged.schema and "label" in logged.schema


def test_registered_pyfunc_answers_raw_sequences_in_user_labels(sensor_job, mlflow_server):
    reg = sensor_job.registration
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{reg.version}")
    xs, labels, _ = sensor_sequences(n=60, seed=7)  # fresh raw sequences, ragged
    padded = np.full((len(xs), max(len(x) for x in xs), 2), np.nan, np.float32)
    for i, x in enumerate(xs):
        padded[i, : len(x)] = x
    pred = model.predict(padded)
    assert set(pred["label"]) <= set(CLASSES)
    accuracy = float(np.mean(pred["label"].to_numpy() == np.array(labels)))
    assert accuracy > 0.75, accuracy


def test_unusable_data_fails_before_any_trial(ray_local, mlflow_server, tmp_path):
    xs, labels, _ = sensor_sequences(n=40)
    path = write_parquet(tmp_path / "d.parquet", xs, labels)
    spec = _spec(mlflow_server, tmp_path, str(path))
    bad = spec.model_copy(update={"data": spec.data.model_copy(update={"label_column": "y"})})
    with pytest.raises(DataFileError, match="no column 'y'"):
        run_job(bad)


def test_time_budget_alone_keeps_sampling_cross_validated_trials_until_spent(
    ray_local, mlflow_server, tmp_path
):
    """No num_samples: trials until the budget is spent; the job ends within it; each trial is
    scored by 5 folds (mean, sd and per-fold values on its run); the champion is the ensemble."""
    xs, labels, _ = sensor_sequences(n=80, seed=3)
    url = write_parquet(tmp_path / "d.parquet", xs, labels)
    spec = parse_job_spec(
        {
            "name": "budgeted",
            "data": {"name": "sequences", "url": str(url)},
            "model": {"cell_type": "gru", "hidden_size": 8, "num_layers": 1},
            "search_space": {"lr": {"loguniform": [0.003, 0.03]}},
            "scheduler": {"name": "fifo"},
            "budget": {"time_budget_s": 30, "max_epochs": 3},
            "storage": {"url": str(tmp_path / "store")},
            "tracking": {"uri": mlflow_server, "experiment": "budget-tests"},
            "registry": {"model_name": "budgeted-test"},
        }
    )
    summary = run_job(spec)
    t = summary.timing
    assert summary.trials >= 3, summary.trial_states
    assert t.search_ended == "the time budget was reached"
    # the search runs until the budget less what is kept for after it; the job ends within it
    assert 30 - final_reserve(30) <= t.total_s <= 30 * 1.1, t
    client = MlflowClient(mlflow_server)
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.metrics["time_search_s"] > 0 and parent.data.params["validation"]
    assert "5-fold cross-validation" in parent.data.tags["rnntune.protocol"]
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    )
    # Trials the budget cut end budget-stopped (FINISHED, scored as they were), never
    # "interrupted" as a stopped job's would
    assert "interrupted" not in summary.trial_states, summary.trial_states
    for c in children:
        assert c.info.status == "FINISHED", (c.info.status, c.data.tags.get(TRIAL_END_TAG))
    cut = [c for c in children if c.data.tags.get(TRIAL_END_TAG) == "budget_stopped"]
    assert all(c.data.tags.get("stopped_by") == "time budget" for c in cut)
    # (a trial the budget stopped before its first epoch has no metrics)
    child = next(c for c in children if "val_acc" in c.data.metrics)
    folds = [child.data.metrics[f"val_acc_fold{i}"] for i in range(5)]
    assert child.data.metrics["val_acc"] == pytest.approx(np.mean(folds), abs=1e-6)
    assert "val_acc_sd" in child.data.metrics
    version = client.get_model_version("budgeted-test", summary.registration.version)
    assert version.tags["final_model"] == "ensemble of 5 fold models"


def test_refit_registers_one_model_trained_on_every_sequence(ray_local, mlflow_server, tmp_path):
    xs, labels, _ = sensor_sequences(n=80, seed=5)
    url = write_parquet(tmp_path / "d.parquet", xs, labels)
    spec = parse_job_spec(
        {
            "name": "refitted",
            "data": {"name": "sequences", "url": str(url)},
            "model": {"cell_type": "gru", "hidden_size": 12, "bidirectional": True},
            "optim": {"lr": 0.02},
            "search_space": {"num_layers": {"grid": [1]}},
            "search": {"algorithm": "grid"},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": 6},
            "storage": {"url": str(tmp_path / "store")},
            "tracking": {"uri": mlflow_server, "experiment": "refit-tests"},
            "registry": {"model_name": "refitted-test", "final_model": "refit"},
        }
    )
    summary = run_job(spec)
    reg = summary.registration
    client = MlflowClient(mlflow_server)
    tag = client.get_model_version(reg.model_name, reg.version).tags["final_model"]
    assert tag.startswith("refit on all training sequences for ")
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{reg.model_name}/{reg.version}")
    assert model.unwrap_python_model().data_info.ensemble == 1  # one network, not five
    fresh, truth, _ = sensor_sequences(n=40, seed=8)
    pred = model.unwrap_python_model().predict(None, fresh)
    assert float(np.mean(pred["label"].to_numpy() == np.array(truth))) > 0.75
