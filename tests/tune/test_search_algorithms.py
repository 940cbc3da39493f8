"""Grid, Optuna and PBT jobs; checkpoints on S3 (moto on loopback); kill-and-resume of a driver."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.paths import ROOT
from tune.driver import run_job
from tune.outcome import PARENT_TAG, TRIAL_TAG
from tune.spec import parse_job_spec

pytestmark = pytest.mark.slow


def _digits_job(tmp_path, mlflow_url: str, name: str, **sections) -> dict:
    raw = {
        "name": name,
        "data": {"name": "digits", "limit": 300},
        "model": {"cell_type": "gru", "hidden_size": 12},
        "optim": {"batch_size": 64, "lr": 0.01},
        "search_space": {},
        "search": {"num_samples": 1, "max_concurrent": 2},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": 1},
        "storage": {"url": str(tmp_path / "store")},
        "tracking": {"uri": mlflow_url, "experiment": "algorithm-tests"},
        "registry": {"enabled": False},
    }
    raw.update(sections)
    return raw


def _child_params(mlflow_url: str, parent_id: str) -> list[dict]:
    client = MlflowClient(mlflow_url)
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'")
    return [
        {**r.data.params, "_status": r.info.status, "_why": r.data.tags.get("failure_reason")}
        for r in runs
    ]


def test_grid_search_covers_every_cell_and_depth(ray_local, mlflow_server, tmp_path):
    cells, depths = ["rnn_tanh", "lstm", "gru"], [1, 2]
    spec = parse_job_spec(
        _digits_job(
            tmp_path,
            mlflow_server,
            "grid-test",
            search_space={"cell_type": {"grid": cells}, "num_layers": {"choice": depths}},
            search={"algorithm": "grid", "num_samples": 1},
        )
    )
    summary = run_job(spec)
    params = _child_params(mlflow_server, summary.parent_run_id)
    seen = sorted((p["cell_type"], int(p["num_layers"])) for p in params)
    assert seen == sorted(itertools.product(cells, depths))
    statuses = [(p["cell_type"], p["num_layers"], p["_status"], p["_why"]) for p in params]
    assert all(p["_status"] == "FINISHED" for p in params), statuses


def test_optuna_job_runs(ray_local, mlflow_server, tmp_path):
    spec = parse_job_spec(
        _digits_job(
            tmp_path,
            mlflow_server,
            "optuna-test",
            search_space={
                "lr": {"loguniform": [0.001, 0.05]},
                "cell_type": {"choice": ["lstm", "gru"]},
            },
            search={"algorithm": "optuna", "num_samples": 3, "max_concurrent": 2},
            budget={"max_epochs": 2},
        )
    )
    before = set(threading.enumerate())
    summary = run_job(spec)
    params = _child_params(mlflow_server, summary.parent_run_id)
    assert len(params) == 3 and summary.best_metric > 0.2
    assert len({p["lr"] for p in params}) == 3
    # the job's MLflow writer thread ends with it: a process running jobs keeps no thread each
    writers = [t for t in set(threading.enumerate()) - before if t.name == "rnntune-mlflow-writer"]
    for t in writers:
        t.join(10)
    assert not [t for t in writers if t.is_alive()]


def test_pbt_job_runs_and_exploits(ray_local, mlflow_server, tmp_path):
    raw = _digits_job(
        tmp_path,
        mlflow_server,
        "pbt-test",
        search_space={"lr": {"choice": [1e-4, 0.02]}},
        search={"num_samples": 2, "max_concurrent": 2, "seed": 1},
        # synch: every perturbation waits for both trials, so the worse one always meets the
        # better (async PBT once went 14 epochs without an exploit on a loaded machine)
        scheduler={
            "name": "pbt",
            "perturbation_interval": 1,
            "quantile_fraction": 0.5,
            "synch": True,
        },
        budget={"max_epochs": 6},
    )
    # Epochs of ~0.5 s: both trials train side by side between the synchronous perturbations.
    raw["data"] = {"name": "mnist1d", "limit": 1500}
    leaked = set(Path(tempfile.gettempdir()).glob("checkpoint_tmp_*"))  # Ray's restore default
    summary = run_job(parse_job_spec(raw))
    client = MlflowClient(mlflow_server)
    exp = client.get_run(summary.parent_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{summary.parent_run_id}'")
    assert len(runs) == 2  # exploited trials continue their own runs, no duplicates
    # With two trials and quantile 0.5 the worse one copies the better one at every interval.
    explored = [k for r in runs for k in r.data.tags if k.startswith("pbt.explore.")]
    overlap = [(r.info.start_time, r.info.end_time) for r in runs]  # when they did not meet
    assert explored, (overlap, [r.data.tags for r in runs])
    assert summary.best_metric > 0.2
    # An exploit restores a checkpoint into a folder the trial removes, not a new one in /tmp.
    assert set(Path(tempfile.gettempdir()).glob("checkpoint_tmp_*")) <= leaked


def test_checkpoints_on_s3(moto_s3, mlflow_server, tmp_path, ray_env):
    """A job whose storage is s3:// (moto): trials checkpoint there; the best is registered.
    Its console is the live view: a line per trial and the summary, no Ray or MLflow noise."""
    import s3fs

    raw = _digits_job(
        tmp_path,
        mlflow_server,
        "s3-test",
        search_space={"hidden_size": {"grid": [8, 12, 16]}},
        budget={"max_epochs": 2},
        registry={"model_name": "s3-test-model"},
    )
    raw["storage"] = {"url": "s3://ckpts/jobs", "keep_checkpoints": 1}
    job = tmp_path / "s3.yaml"
    import yaml

    job.write_text(yaml.safe_dump(raw))
    # A separate driver process, so its Ray workers inherit the S3 endpoint environment.
    proc = subprocess.run(
        [sys.executable, "-m", "tune", "run", str(job), "--job-id", "s3job"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fs = s3fs.S3FileSystem(endpoint_url=moto_s3)
    files = fs.find("ckpts/jobs/s3job")
    assert any(f.endswith("model.ckpt") for f in files), files
    assert any(f.endswith("job_spec.json") for f in files)
    console = (proc.stdout + proc.stderr).splitlines()
    said = "\n".join(console)  # every message below: what the console showed
    assert "registered s3-test-model v1" in proc.stdout, said
    assert len(console) < 40, said
    assert not [line for line in console if "snapshotting" in line or "Warning" in line], said
    assert proc.stderr == "", proc.stderr  # no Ray token-auth line, no MLflow table creation
    ended = [line for line in console if " hidden_size=" in line and "completed after 2" in line]
    assert len(ended) == 3 and {line.split()[0] for line in ended} == {"1/3", "2/3", "3/3"}, said
    assert "job s3job: 3 trials (3 completed)" in proc.stdout, said
    assert (
        "3/3 trials done | 0 running | 0 early-stopped | 0 failed | best val_acc" in proc.stdout
    ), said


def test_killed_driver_resumes_without_duplicate_runs(mlflow_server, tmp_path, ray_env):
    raw = _digits_job(
        tmp_path,
        mlflow_server,
        "resume-test",
        search_space={"hidden_size": {"grid": [8, 10, 12, 14]}},
        search={"num_samples": 1, "max_concurrent": 1},
        budget={"max_epochs": 3},
    )
    raw["data"]["limit"] = 1500  # trials of a few seconds: the kill most often falls mid-search
    raw["optim"]["batch_size"] = 16
    import yaml

    job = tmp_path / "resume.yaml"
    job.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tune", "run", str(job), "--job-id", "resumable"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = MlflowClient(mlflow_server)
    deadline = time.monotonic() + 300
    parent_id = None
    while time.monotonic() < deadline:  # wait until one trial has finished, then kill the driver
        exp = client.get_experiment_by_name("algorithm-tests")
        runs = (
            client.search_runs([exp.experiment_id], "tags.`rnntune.job_id` = 'resumable'")
            if exp
            else []
        )
        done = [r for r in runs if PARENT_TAG in r.data.tags and r.info.status == "FINISHED"]
        parents = [r for r in runs if PARENT_TAG not in r.data.tags]
        if done and parents:
            parent_id = parents[0].info.run_id
            break
        time.sleep(0.25)
    assert parent_id, "no trial finished before the deadline"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    # Tune prunes checkpoints (keep-best-K) as they arrive but saves its state only every ~10 s:
    # the state a kill leaves can name checkpoints already gone. Make that certain: delete all
    # but those of the trial seen finished. Restored trials must start over instead of failing
    # on the missing files; trials the state calls done (the kill may come after the last one)
    # are passed over for the model if their checkpoints are gone.
    kept = {r.data.tags[TRIAL_TAG] for r in done}
    pruned = [
        folder
        for folder in (tmp_path / "store" / "resumable").glob("*/checkpoint_*")
        if not any(trial_id in folder.parent.name for trial_id in kept)
    ]
    assert list((tmp_path / "store" / "resumable").glob("*/checkpoint_*")), "nothing checkpointed"
    for folder in pruned:
        shutil.rmtree(folder)
    resumed = subprocess.run(
        [sys.executable, "-m", "tune", "resume", "resumable", "--storage", str(tmp_path / "store")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    params = _child_params(mlflow_server, parent_id)
    assert sorted(int(p["hidden_size"]) for p in params) == [
        8,
        10,
        12,
        14,
    ]  # 4 trials, no duplicates
    statuses = [(p["hidden_size"], p["_status"], p["_why"]) for p in params]
    assert all(p["_status"] == "FINISHED" for p in params), statuses
    exp_id = client.get_run(parent_id).info.experiment_id
    for run in client.search_runs([exp_id], f"tags.`{PARENT_TAG}` = '{parent_id}'"):
        history = client.get_metric_history(run.info.run_id, "val_acc")
        # every trial trained to the end, and epochs trained again were logged once
        assert sorted(m.step for m in history) == [1, 2, 3], (run.data.params, history)
    assert client.get_run(parent_id).info.status == "FINISHED"
