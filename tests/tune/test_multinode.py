"""Multi-node: one search job spreads its trials over a head and a worker node (a real
`ray.cluster_utils.Cluster` on loopback) and survives losing the worker: its trial is retried
from its last checkpoint on the head and the job ends with every trial finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.support.paths import ROOT
from tune.outcome import PARENT_TAG
from tune.trials import NODE_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOB_ID = "multinode"
MAX_EPOCHS = 12


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """A private Ray temp dir, so this cluster's address file (`ray_current_cluster`) is not the
    machine's default one that a bare `ray.init()` elsewhere would connect to. Short: Ray's Unix
    socket paths must stay under 107 bytes."""
    path = tempfile.mkdtemp(prefix="rnt-mn-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", path)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _read_results(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows


def _live_results(ray_tmpdir: Path) -> dict[str, list[dict]]:
    """trial dir name -> its results so far, from the driver's staging copy of `result.json`
    (Tune syncs it to the job's storage only now and then; checkpoints go there directly)."""
    pattern = f"ray/session_*/artifacts/*/{JOB_ID}/driver_artifacts/*/result.json"
    return {p.parent.name: _read_results(p) for p in ray_tmpdir.glob(pattern)}


def _job_spec(tmp_path: Path) -> dict:
    return {
        "name": "multinode-test",
        # Full digits, GRU-256: an epoch takes ~0.5-1 s on one shared core, so the worker's
        # trial is still mid-run when the node goes, a few epochs after it was seen.
        "data": {"name": "digits"},
        "model": {"cell_type": "gru", "hidden_size": 256},
        "optim": {"batch_size": 64, "lr": 0.01},
        "search_space": {},  # identical trials, so they take the same time
        "search": {"num_samples": 2, "max_concurrent": 2},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": MAX_EPOCHS},
        "resources": {"cpus": 1},
        "storage": {"url": str(tmp_path / "store"), "max_failures": 3},
        "tracking": {"experiment": "multinode-tests"},  # embedded SQLite under the storage
        "registry": {"enabled": False},
    }


def test_trials_use_both_nodes_and_survive_worker_loss(ray_env, ray_tmpdir, tmp_path):
    from ray.cluster_utils import Cluster

    spec_path = tmp_path / "multinode.yaml"
    spec_path.write_text(yaml.safe_dump(_job_spec(tmp_path)))
    log_path = tmp_path / "driver.log"

    def driver_log() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    # One CPU per node: two concurrent one-CPU trials need both nodes.
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    proc = None
    try:
        worker = cluster.add_node(num_cpus=1)
        head_id, worker_id = cluster.head_node.node_id, worker.node_id
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tune", "run", str(spec_path), "--job-id", JOB_ID],
                cwd=ROOT,
                env={
                    **os.environ,
                    "RAY_ADDRESS": cluster.address,
                    "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        # Wait until both trials run, one on each node, and the worker's has checkpointed twice.
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"driver exited early:\n{driver_log()}"
            assert time.monotonic() < deadline, f"trials did not start:\n{driver_log()}"
            live = _live_results(ray_tmpdir)
            on_worker = {
                t: rs for t, rs in live.items() if any(r[NODE_ID] == worker_id for r in rs)
            }
            nodes = {r[NODE_ID] for rs in live.values() for r in rs}
            if on_worker and nodes == {head_id, worker_id}:
                ((victim, before),) = on_worker.items()
                if len(before) >= 2:
                    break
            time.sleep(0.2)
        epochs_before = [r["epoch"] for r in before]
        assert max(epochs_before) < MAX_EPOCHS, "the worker's trial ended before the node loss"

        cluster.remove_node(worker, allow_graceful=False)  # the worker node dies
        try:
            rc = proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"driver did not finish after the node loss:\n{driver_log()}")
        assert rc == 0, driver_log()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        cluster.shutdown()

    out = driver_log()
    assert f"job {JOB_ID}: 2 trials (2 completed)" in out, out
    assert "\noutcome: succeeded (2 trials: 2 completed)" in out, out

    # Every trial reached the last epoch; the storage holds the final result.json of each.
    job_dir = tmp_path / "store" / JOB_ID
    results = {p.parent.name: _read_results(p) for p in job_dir.glob("*/result.json")}
    assert len(results) == 2, sorted(results)
    for trial, rows in results.items():
        assert rows[-1]["epoch"] == MAX_EPOCHS, (trial, rows[-1])

    # The other trial ran on the head throughout, without a restart.
    (survivor,) = set(results) - {victim}
    assert {r[NODE_ID] for r in results[survivor]} == {head_id}
    assert [r["epoch"] for r in results[survivor]] == list(range(1, MAX_EPOCHS + 1))
    assert all(r["iterations_since_restore"] == r["training_iteration"] for r in results[survivor])

    # The victim ran on the worker, then was restored from a checkpoint on the head: its epochs
    # continue where a checkpoint left off instead of starting again at 1.
    rows = results[victim]
    on_worker = [r for r in rows if r[NODE_ID] == worker_id]
    after = [r for r in rows if r[NODE_ID] == head_id]
    assert rows[: len(on_worker)] == on_worker and on_worker and after, [
        (r[NODE_ID][:8], r["epoch"]) for r in rows
    ]
    assert [r["epoch"] for r in on_worker] == list(range(1, len(on_worker) + 1))
    assert len(on_worker) >= len(epochs_before)
    restored = after[0]
    assert 1 < restored["epoch"] <= on_worker[-1]["epoch"] + 1, restored
    assert restored["iterations_since_restore"] == 1
    assert restored["training_iteration"] == restored["epoch"]
    assert [r["epoch"] for r in after] == list(range(restored["epoch"], MAX_EPOCHS + 1))

    # MLflow: one child run per trial (the retry continued its run), both finished.
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("multinode-tests")
    runs = client.search_runs([exp.experiment_id], f"tags.`rnntune.job_id` = '{JOB_ID}'")
    children = [r for r in runs if PARENT_TAG in r.data.tags]
    assert len(children) == 2
    assert all(r.info.status == "FINISHED" for r in children), [r.info for r in children]
    # The node loss and the retry are on the victim's run, with the error Ray gave.
    retried = [r for r in children if r.data.tags["rnntune.trial_id"] in victim]
    assert len(retried) == 1 and retried[0].data.tags.get("rnntune.retries") == "1", retried
    assert retried[0].data.tags["rnntune.retry.1"], retried[0].data.tags
    (other,) = [r for r in children if r is not retried[0]]
    assert "rnntune.retries" not in other.data.tags

    # System metrics of both nodes on the parent run, each by its node, the worker's until it went
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    labels = {f"node-{head_id[:8]}", f"node-{worker_id[:8]}"}
    cpu = {k for k in parent.data.metrics if k.endswith("/cpu_utilization_percentage")}
    assert cpu == {f"system/{label}/cpu_utilization_percentage" for label in labels}, cpu
    assert set(json.loads(parent.data.tags["rnntune.system_metrics_host"])) == labels
