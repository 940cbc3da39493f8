"""Search jobs end to end on a real local Ray runtime and a real `mlflow server`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from lightning_modules.data import build_data
from tune.driver import run_job
from tune.outcome import JOB_TAG, PARENT_TAG
from tune.spec import parse_job_spec

pytestmark = pytest.mark.slow

EPOCH_METRICS = {"train_loss", "val_loss", "val_acc", "grad_norm", "clip_frac", "epoch_time_s"}


def _spec(tmp_path, mlflow_url: str, **overrides):
    raw = {
        "name": "asha-test",
        "data": {"name": "mnist1d", "limit": 1200},
        "model": {"cell_type": "gru", "hidden_size": 24, "bidirectional": True},
        "optim": {"batch_size": 64, "grad_clip": 2.0},
        "search_space": {"lr": {"grid": [0.01, 0.006, 1e-6, 1e-6]}},
        "search": {"algorithm": "random", "num_samples": 1, "max_concurrent": 2},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
        "budget": {"max_epochs": 4},
        "storage": {"url": str(tmp_path / "store")},
        "tracking": {"uri": mlflow_url, "experiment": "search-tests"},
        "registry": {"model_name": "mnist1d-test"},
    }
    for key, value in overrides.items():
        raw[key] = (
            {**raw[key], **value}
            if isinstance(value, dict) and key in raw and key != "search_space"
            else value
        )
    return parse_job_spec(raw)


def _children(client: MlflowClient, parent_id: str):
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'")


@pytest.fixture(scope="module")
def asha_job(ray_local, mlflow_server, tmp_path_factory):
    spec = _spec(tmp_path_factory.mktemp("asha"), mlflow_server)
    return spec, run_job(spec)


def test_asha_job_tracks_one_parent_and_four_children(asha_job, mlflow_server):
    spec, summary = asha_job
    client = MlflowClient(mlflow_server)
    assert summary.trials == 4 and summary.best_metric > 0.25  # chance is 0.1
    exp = client.get_run(summary.parent_run_id).info.experiment_id
    job_runs = client.search_runs([exp], filter_string=f"tags.`{JOB_TAG}` = '{summary.job_id}'")
    parents = [r for r in job_runs if PARENT_TAG not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = _children(client, summary.parent_run_id)
    assert len(children) == 4
    param_names = {frozenset(r.data.params) for r in children}
    assert len(param_names) == 1  # the same parameter names in every trial
    assert {"cell_type", "num_layers", "hidden_size", "grad_clip", "lr", "optimizer"} <= set(
        children[0].data.params
    )
    for run in children:
        assert EPOCH_METRICS <= set(run.data.metrics), run.data.metrics
        assert not any(k.startswith(("config/", "time_")) or k == "pid" for k in run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        assert run.info.status == "FINISHED"  # early-stopped trials are not failures
        assert run.data.tags["rnntune.trial_end"] in ("completed", "early_stopped")
        best = max(m.value for m in history)  # the compare page ranks by the best epoch
        assert run.data.metrics["best_val_acc"] == best
        assert history[int(run.data.metrics["best_epoch"]) - 1].value == best
    assert summary.best_metric == max(r.data.metrics["best_val_acc"] for r in children)
    artifacts = {a.path for a in client.list_artifacts(summary.parent_run_id)}
    assert {
        "comparison.png",
        "cell_types.md",
        "job_spec.json",
        "champion_decision.json",
        "importance.json",
        "importance.png",
    } <= artifacts
    system = parents[0].data.metrics  # the job's machine, on the UI's "System metrics" tab
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        system
    )
    note = parents[0].data.tags["mlflow.note.content"]  # the run's description in the UI
    assert "**4 trials**" in note and "**Best val_acc**" in note and "**What mattered" in note
    assert summary.importance is not None and list(summary.importance.shares) == ["lr"]


def test_asha_stops_hopeless_trials_early(asha_job, mlflow_server):
    _, summary = asha_job
    client = MlflowClient(mlflow_server)
    children = _children(client, summary.parent_run_id)
    stopped = [r for r in children if r.data.tags.get("rnntune.trial_end") == "early_stopped"]
    assert stopped and all(r.data.tags.get("stopped_by") == "asha" for r in stopped)
    assert summary.trial_states.get("early_stopped") == len(stopped)
    assert summary.outcome.kind == "succeeded" and summary.outcome.exit_code == 0
    hopeless = [r for r in children if float(r.data.params["lr"]) < 1e-5]
    assert {r.info.run_id for r in hopeless} <= {r.info.run_id for r in stopped}
    assert all(len(client.get_metric_history(r.info.run_id, "val_acc")) < 4 for r in hopeless)


def test_champion_registered_and_pyfunc_reproduces_test_accuracy(asha_job, mlflow_server):
    spec, summary = asha_job
    reg = summary.registration
    assert reg.promoted and reg.reason == "no champion yet"
    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("mnist1d-test", "champion")
    assert str(champion.version) == reg.version
    assert (
        str(client.get_model_version_by_alias("mnist1d-test", "challenger").version) == reg.version
    )
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/mnist1d-test@champion")
    data = build_data(spec.data, spec.trainer.seed)
    pred = model.predict(data.test.x.numpy())
    acc = float((pred["label"].to_numpy() == data.test.y.numpy()).mean())
    assert acc == pytest.approx(float(champion.tags["test_acc"]), abs=0.005)
    # lineage: the version's run is the winning trial's, and its tags say where it came from
    trial_run = client.get_run(champion.run_id)
    assert trial_run.data.tags[PARENT_TAG] == summary.parent_run_id
    assert champion.tags["trial_id"] == trial_run.data.tags["rnntune.trial_id"]
    assert champion.tags["job_id"] == summary.job_id
    assert champion.tags["parent_run_id"] == summary.parent_run_id
    assert "/checkpoint_" in champion.tags["checkpoint"]
    # one identity of the data: the parent's dataset input and the registry's fingerprint
    inputs = client.get_run(summary.parent_run_id).inputs.dataset_inputs
    assert [d.dataset.digest for d in inputs] == [champion.tags["data_fingerprint"]]
    assert trial_run.data.metrics["best_val_acc"] == summary.best_metric
    assert trial_run.info.status == "FINISHED" and "test_acc" in trial_run.data.metrics
    parent = client.get_run(summary.parent_run_id)
    assert parent.data.tags["rnntune.registered_model"] == f"models:/mnist1d-test/{reg.version}"
    # portable: what it imports, pinned (torch without +cpu), and not this editable package
    reqs = Path(mlflow.pyfunc.get_model_dependencies("models:/mnist1d-test@champion"))
    lines = reqs.read_text().split()
    assert any(line.startswith("torch==") and "+" not in line for line in lines), lines
    assert not [line for line in lines if line.startswith("rnntune")], lines
    probs = pred[[f"prob_{i}" for i in range(10)]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_worse_job_leaves_champion_alone(asha_job, mlflow_server, tmp_path):
    _, first = asha_job
    worse = _spec(
        tmp_path,
        mlflow_server,
        name="asha-worse",
        search_space={"lr": 1e-6},
        budget={"max_epochs": 1},
    )
    summary = run_job(worse)
    reg = summary.registration
    assert not reg.promoted and "does not beat" in reg.reason
    client = MlflowClient(mlflow_server)
    assert (
        client.get_model_version_by_alias("mnist1d-test", "champion").version
        == first.registration.version
    )
    assert (
        str(client.get_model_version_by_alias("mnist1d-test", "challenger").version) == reg.version
    )
    tags = client.get_run(summary.parent_run_id).data.tags
    assert tags["champion_decision"].startswith("kept:")
