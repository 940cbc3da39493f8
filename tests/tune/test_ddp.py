"""Multi-worker trials: `resources.workers > 1` trains each trial as DDP through Ray Train."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from lightning_modules.config import SpecError
from lightning_modules.data import build_data
from lightning_modules.data.base import TensorBatches
from lightning_modules.training import load_module
from tune.driver import run_job
from tune.outcome import PARENT_TAG
from tune.schedulers import concurrency_limit, search_algorithm, trial_resources
from tune.spec import parse_job_spec
from tune.trials import CHECKPOINT_FILE, WORLD_SIZE

MODEL_NAME = "ddp-test-model"
BATCH, EPOCHS, LIMIT = 64, 2, 300


def _raw(tmp_path: Path, mlflow_url: str = "sqlite:///unused.db", **sections) -> dict:
    raw = {
        "name": "ddp-test",
        "data": {"name": "digits", "limit": LIMIT},
        "model": {"cell_type": "gru", "hidden_size": 12},
        "optim": {"batch_size": BATCH, "lr": 0.01},
        "search_space": {},
        "search": {"num_samples": 1},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": EPOCHS},
        "resources": {"workers": 2, "cpus": 1},
        "storage": {"url": str(tmp_path / "store")},
        "tracking": {"uri": mlflow_url, "experiment": "ddp-tests"},
        "registry": {"enabled": True, "model_name": MODEL_NAME},
    }
    raw.update(sections)
    return raw


def test_workers_field_bounds(tmp_path):
    assert parse_job_spec(_raw(tmp_path)).resources.workers == 2
    for bad in (0, 257):
        with pytest.raises(SpecError, match="resources.workers"):
            parse_job_spec(_raw(tmp_path, resources={"workers": bad}))


def test_multi_worker_trials_reserve_little_and_fit_the_cluster(tmp_path):
    ddp = parse_job_spec(_raw(tmp_path, resources={"workers": 2, "cpus": 2}))
    assert trial_resources(ddp) == {"cpu": 0, "gpu": 0, "memory": 1}
    assert concurrency_limit(ddp, {"CPU": 9.0}) == 2  # floor(9 / (2 workers x 2 CPUs))
    assert concurrency_limit(ddp, {"CPU": 2.0}) == 1  # never 0: that trial waits
    assert search_algorithm(ddp, 2).max_concurrent == 2
    gpu = parse_job_spec(_raw(tmp_path, resources={"workers": 2, "cpus": 1, "gpus": 1}))
    assert concurrency_limit(gpu, {"CPU": 64.0, "GPU": 4.0}) == 2
    capped = parse_job_spec(_raw(tmp_path, search={"num_samples": 4, "max_concurrent": 3}))
    assert concurrency_limit(capped, {"CPU": 2.0}) == 3  # the user's limit stands
    single = parse_job_spec(_raw(tmp_path, resources={"workers": 1, "cpus": 2}))
    assert concurrency_limit(single, {"CPU": 2.0}) is None
    assert trial_resources(single) == {"cpu": 2, "gpu": 0}


def _trial_results(store: Path, job_id: str) -> dict[Path, list[dict]]:
    trials = [p for p in (store / job_id).iterdir() if (p / "result.json").exists()]
    return {
        p: [json.loads(line) for line in (p / "result.json").read_text().splitlines()]
        for p in trials
    }


@pytest.mark.slow
def test_ddp_job_trains_two_ranks_and_registers(ray_local, mlflow_server, tmp_path):
    spec = parse_job_spec(_raw(tmp_path, mlflow_server))
    summary = run_job(spec)
    assert summary.trial_states == {"completed": 1} and not summary.errors, summary

    client = MlflowClient(mlflow_server)
    exp = client.get_run(summary.parent_run_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`{PARENT_TAG}` = '{summary.parent_run_id}'")
    assert len(runs) == 1
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))

    data = build_data(spec.data, spec.trainer.seed)
    results = _trial_results(tmp_path / "store", summary.job_id)
    assert len(results) == 1
    for trial_dir, rows in results.items():
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
        assert all(r[WORLD_SIZE] == 2 for r in rows), rows
        assert not list(trial_dir.glob("ddp-*"))  # the Train run's leftovers are removed
        last = rows[-1]
        ckpt = trial_dir / last["checkpoint_dir_name"] / CHECKPOINT_FILE
        # Each rank stepped through its half of the training set only: ceil(150 / 64) = 3 steps
        # per epoch, where one process over all 300 examples takes 5.
        raw = torch.load(ckpt, map_location="cpu", weights_only=False)
        per_rank = math.ceil(math.ceil(len(data.train) / 2) / BATCH)
        assert raw["global_step"] == EPOCHS * per_rank < EPOCHS * math.ceil(len(data.train) / BATCH)
        # The reported val_acc is the whole validation set's (both ranks' halves summed), for the
        # weights in the checkpoint reported with it.
        full = load_module(ckpt).evaluate(TensorBatches(data.val, 256, False), stage="val")
        assert last["val_acc"] == pytest.approx(full["val_acc"], abs=1e-6)
        assert last["val_loss"] == pytest.approx(full["val_loss"], rel=1e-4)

    # The Train run's placement group is gone: the workers' CPUs are free for the next job.
    deadline = time.monotonic() + 30
    while ray_local.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_local.available_resources().get("CPU", 0) == 2

    reg = summary.registration
    assert reg is not None and reg.model_name == MODEL_NAME
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{reg.version}")
    pred = model.predict(data.test.x.numpy())
    acc = float((pred["label"].to_numpy() == data.test.y.numpy()).mean())
    assert acc == pytest.approx(reg.test_value, abs=0.005)


@pytest.mark.slow
def test_ddp_job_on_streamed_parquet_reads_rank_shards(ray_local, mlflow_server, tmp_path):
    """Two ranks stream the user's Parquet file by row groups: disjoint shards, equal steps."""
    from lightning_modules.data.parquet_stream import ParquetBatches, loader
    from tests.support.sequence_data import sensor_sequences, write_parquet

    xs, labels, _ = sensor_sequences(n=240)
    path = write_parquet(tmp_path / "sensors.parquet", xs, labels)  # 5 row groups of 50
    batch = 16
    raw = _raw(
        tmp_path,
        mlflow_server,
        data={"name": "sequences", "url": str(path), "reader": "stream"},
        optim={"batch_size": batch, "lr": 0.01},
        registry={"enabled": False},
    )
    spec = parse_job_spec(raw)
    summary = run_job(spec)
    assert summary.trial_states == {"completed": 1} and not summary.errors, summary
    data = build_data(spec.data, spec.trainer.seed)
    (trial_dir, rows), *_ = _trial_results(tmp_path / "store", summary.job_id).items()
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    assert all(r[WORLD_SIZE] == 2 for r in rows)
    ckpt = trial_dir / rows[-1]["checkpoint_dir_name"] / CHECKPOINT_FILE
    steps = len(data.train) // 2 // batch  # every rank the same, whatever its shard's size
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == EPOCHS * steps
    val_batches = loader(ParquetBatches(data.val, 256, False), workers=0)
    val = load_module(ckpt).evaluate(val_batches, stage="val")
    assert rows[-1]["val_acc"] == pytest.approx(val["val_acc"], abs=1e-6)
