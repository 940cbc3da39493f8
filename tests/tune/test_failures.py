"""Failures told truthfully: each fault ends with the right exit code, statuses, counts and cause.

Real faults on a real local Ray runtime and a real `mlflow server`: trials that raise, trials
whose loss becomes NaN, a registration interrupted between creating the version and its aliases,
a driver SIGKILLed while its embedded Ray runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lightning_modules.config import TrainSpec
from lightning_modules.training import train
from service.cli import main
from service.stack import free_port, stop
from tests.support.processes import start_mlflow_server
from tune import outcome as O
from tune.outcome import JOB_TAG, PARENT_TAG
from tune.registry import CHALLENGER, CHAMPION, register_best
from tune.spec import parse_job_spec

pytestmark = pytest.mark.slow


def _job(tmp_path, mlflow_url: str, name: str, **sections) -> dict:
    return {
        "name": name,
        "search": {"algorithm": "random", "num_samples": 1, "max_concurrent": 2},
        "budget": {"max_epochs": 2},
        "trainer": {"diagnostics": False},
        "storage": {"url": str(tmp_path / "store")},
        "tracking": {"uri": mlflow_url, "experiment": "failure-tests"},
        "registry": {"model_name": name},
        **sections,
    }


def _run_cli(tmp_path, raw: dict, capsys) -> tuple[int, str]:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["run", str(path)])
    return code, capsys.readouterr().out


def _job_runs(client: MlflowClient, job_id: str):
    exp = client.get_experiment_by_name("failure-tests").experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'")
    parent = next(r for r in runs if PARENT_TAG not in r.data.tags)
    return parent, [r for r in runs if PARENT_TAG in r.data.tags]


def _job_id(out: str) -> str:
    return next(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("job "))


def test_every_trial_failing_fails_the_job_with_the_trials_exception(
    ray_local, mlflow_server, tmp_path, capsys
):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("caf\xe9 au lait ".encode("latin-1") * 400)  # not UTF-8
    raw = _job(
        tmp_path,
        mlflow_server,
        "every-trial-fails",
        data={"name": "text", "url": str(corpus), "seq_len": 20},
        model={"cell_type": "gru", "hidden_size": 16},
        search_space={"lr": {"grid": [0.01, 0.003]}},
    )
    code, out = _run_cli(tmp_path, raw, capsys)
    last = out.strip().splitlines()[-1]
    assert code == 1, out
    assert last.startswith("outcome: failed (2 trials: 2 error); first cause: UnicodeDecodeError")
    client = MlflowClient(mlflow_server)
    parent, children = _job_runs(client, _job_id(out))
    assert parent.info.status == "FAILED"
    assert parent.data.tags[O.OUTCOME_TAG] == "failed"
    assert parent.data.tags[O.CAUSE_TAG].startswith("UnicodeDecodeError: 'utf-8' codec")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FAILED" and run.data.tags[O.TRIAL_END_TAG] == "error"
        assert run.data.tags["failure_reason"].startswith("UnicodeDecodeError: "), run.data.tags
    assert client.search_model_versions("name = 'every-trial-fails'") == []  # nothing registered


def test_a_diverged_trial_is_a_failed_trial_with_its_epoch_and_no_fake_metrics(
    ray_local, mlflow_server, tmp_path, capsys
):
    raw = _job(
        tmp_path,
        mlflow_server,
        "one-trial-diverges",
        data={"name": "mnist1d", "limit": 600},
        model={"cell_type": "rnn_relu", "hidden_size": 16},
        optim={"optimizer": "adam", "batch_size": 64},
        search_space={"lr": {"grid": [10.0, 0.003]}},  # adam at lr 10: NaN in the first epoch
    )
    code, out = _run_cli(tmp_path, raw, capsys)
    last = out.strip().splitlines()[-1]
    assert code == 0, out  # a model was made: the job succeeded, and says what failed
    assert last.startswith("outcome: succeeded with failed trials (2 trials: 1 completed, ")
    assert "1 diverged); first cause: diverged at epoch 1: the training loss became nan" in last
    client = MlflowClient(mlflow_server)
    parent, children = _job_runs(client, _job_id(out))
    assert parent.info.status == "FINISHED" and parent.data.tags[O.OUTCOME_TAG] == O.PARTIAL
    by_lr = {float(r.data.params["lr"]): r for r in children}
    diverged, healthy = by_lr[10.0], by_lr[0.003]
    assert diverged.info.status == "FAILED" and diverged.data.tags[O.TRIAL_END_TAG] == "diverged"
    assert diverged.data.tags["failure_reason"].startswith("diverged at epoch 1: ")
    # NaN validation metrics are left out, never logged as 0.0 (better than any healthy run)
    assert client.get_metric_history(diverged.info.run_id, "val_acc") == []
    assert client.get_metric_history(diverged.info.run_id, "val_loss") == []
    assert [m.value for m in client.get_metric_history(diverged.info.run_id, "train_loss")]
    assert healthy.info.status == "FINISHED" and healthy.data.tags[O.TRIAL_END_TAG] == "completed"
    versions = client.search_model_versions("name = 'one-trial-diverges'")
    assert len(versions) == 1 and versions[0].tags["job_id"] == parent.data.tags[JOB_TAG]


def test_registration_resumed_after_a_kill_reuses_the_jobs_version(mlflow_server, tmp_path):
    """A driver killed after the version was created, before its aliases: the resumed job
    finds the version by its job id (set in the same call that created it) and finishes."""
    train_spec = TrainSpec.model_validate(
        {
            "data": {"name": "digits"},
            "model": {"cell_type": "gru", "hidden_size": 16},
            "trainer": {"max_epochs": 1, "diagnostics": False},
        }
    )
    result = train(train_spec, tmp_path / "t", logger=False, enable_progress_bar=False)
    name = "registration-resumed"
    spec = parse_job_spec(
        {**train_spec.model_dump(mode="json"), "name": name, "registry": {"model_name": name}}
    )
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("failure-tests") or client.create_experiment(
        "failure-tests"
    )
    exp_id = exp if isinstance(exp, str) else exp.experiment_id
    parent = client.create_run(exp_id, tags={JOB_TAG: "job-1"}).info.run_id
    first = register_best(spec, "job-1", parent, mlflow_server, result.checkpoint)
    created = client.get_model_version(name, first.version)
    assert created.tags["job_id"] == "job-1" and created.tags["test_acc"]
    for alias in (CHALLENGER, CHAMPION):  # the kill: aliases never set
        client.delete_registered_model_alias(name, alias)
    again = register_best(spec, "job-1", parent, mlflow_server, result.checkpoint)
    assert again.version == first.version and again.test_value == first.test_value
    assert again.promoted and len(client.search_model_versions(f"name = '{name}'")) == 1
    assert client.get_model_version_by_alias(name, CHAMPION).version == first.version
    assert client.get_model_version_by_alias(name, CHALLENGER).version == first.version


def _ray_started(driver: psutil.Process) -> bool:
    names = " ".join(p.name() for p in driver.children(recursive=True))
    return "raylet" in names and "gcs_server" in names


def test_a_killed_embedded_driver_leaves_no_ray_process_behind(tmp_path, ray_env):
    """`rnntune run` SIGKILLed while a trial trains: the watchdog it started stops the
    embedded Ray's processes (GCS, raylet, agents, workers), and then itself."""
    raw = _job(
        tmp_path,
        "unused",
        "killed-driver",
        data={"name": "digits"},
        model={"cell_type": "gru", "hidden_size": 16},
        search_space={"lr": {"grid": [0.01]}},
        budget={"max_epochs": 200},
        tracking={"experiment": "killed-driver"},  # the embedded store under storage
        registry={"enabled": False},
    )
    spec = tmp_path / "killed.yaml"
    spec.write_text(yaml.safe_dump(raw))
    rnntune = str(Path(sys.executable).parent / "rnntune")
    proc = subprocess.Popen(
        [rnntune, "run", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    driver = psutil.Process(proc.pid)
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "store").glob("*/*/result.json")):  # a trial is training
            assert proc.poll() is None and time.monotonic() < deadline, "the trial never started"
            time.sleep(0.5)
        assert _ray_started(driver)
        seen = {p.pid: p for p in driver.children(recursive=True)}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(list(seen.values()), timeout=30)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        for p in seen.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        if proc.poll() is None:
            proc.kill()


def _two_digit_trials(tmp_path, mlflow_url: str, name: str, epochs: int, **sections) -> dict:
    """Two GRU trials on digits under FIFO, long enough to break something under them."""
    defaults = {
        "data": {"name": "digits"},
        "model": {"cell_type": "gru", "hidden_size": 12},
        "search_space": {"lr": {"grid": [0.01, 0.003]}},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": epochs},
    }
    return _job(tmp_path, mlflow_url, name, **{**defaults, **sections})


def _wait_until_both_logged(client: MlflowClient, job_id: str, proc) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch logged"
        exp = client.get_experiment_by_name("failure-tests")
        runs = (
            client.search_runs([exp.experiment_id], f"tags.`{JOB_TAG}` = '{job_id}'") if exp else []
        )
        kids = [r for r in runs if PARENT_TAG in r.data.tags and "val_acc" in r.data.metrics]
        if len(kids) == 2:
            return
        time.sleep(0.5)


OUTAGE_S = 10  # the client's own retries are off below: every second of it is the writer's


def test_a_search_rides_out_an_mlflow_outage_and_delivers_every_epoch_in_order(tmp_path, ray_env):
    """MLflow stopped under a running search for 10 s (and the time to start again), then
    started on the same store: the trials keep training meanwhile, and every epoch reaches
    MLflow once, in order. (`bench/faults.py` does the same with 60 s and default retries.)"""
    root, port = tmp_path / "mlflow", free_port()
    root.mkdir()
    server = start_mlflow_server(root, port)
    url = server.url
    # ~0.07 s an epoch on an idle machine: 200 keep both trials training well past the moment
    # both have logged, which a loaded machine delays by seconds (50 once ended before it)
    epochs = 200
    raw = _two_digit_trials(tmp_path, url, "outage", epochs, registry={"enabled": False})
    spec = tmp_path / "outage.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out, err = open(tmp_path / "out.log", "w"), open(tmp_path / "err.log", "w")
    rnntune = str(Path(sys.executable).parent / "rnntune")
    proc = subprocess.Popen(
        [rnntune, "run", str(spec), "--job-id", "outage"],
        stdout=out,
        stderr=err,
        env={
            **os.environ,
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
        },
    )
    client = MlflowClient(url)
    try:
        _wait_until_both_logged(client, "outage", proc)
        stop(server)
        down = time.time() * 1000
        time.sleep(OUTAGE_S)
        server = start_mlflow_server(root, port)
        up = time.time() * 1000
        assert proc.wait(timeout=600) == 0, (tmp_path / "err.log").read_text()[-3000:]
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        stop(server)
        raise
    try:
        parent, children = _job_runs(client, "outage")
        assert parent.info.status == "FINISHED" and len(children) == 2
        assert parent.data.tags[O.OUTCOME_TAG] == O.SUCCEEDED
        for run in children:
            assert run.info.status == "FINISHED"
            history = client.get_metric_history(run.info.run_id, "val_acc")
            steps = [m.step for m in history]
            assert sorted(steps) == list(range(1, epochs + 1)), steps  # none lost, none twice
            stamps = [m.timestamp for m in sorted(history, key=lambda m: m.step)]
            assert stamps == sorted(stamps)  # logged in the order they were trained
            during = [m for m in history if down < m.timestamp < up]
            assert len(during) >= 5, (len(during), down, up)  # training went on meanwhile
        cpu = client.get_metric_history(parent.info.run_id, "system/cpu_utilization_percentage")
        assert [m.step for m in sorted(cpu, key=lambda m: m.step)] == list(range(len(cpu)))
        # sampled every second while MLflow was down (the search may end before it is back)
        assert len([m for m in cpu if down < m.timestamp < up]) >= 2, (down, up, cpu)
        stderr = (tmp_path / "err.log").read_text()
        assert "unreachable" in stderr and "back after" in stderr, stderr[-3000:]
        assert "writes were lost" not in (tmp_path / "out.log").read_text()
    finally:
        stop(server)


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 12 MiB of its own (root only: skipped where `mount` is refused)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _start(tmp_path, raw: dict, job_id: str) -> subprocess.Popen:
    spec = tmp_path / f"{job_id}.yaml"
    spec.write_text(yaml.safe_dump(raw))
    rnntune = str(Path(sys.executable).parent / "rnntune")
    out = open(tmp_path / f"{job_id}.log", "w")
    return subprocess.Popen(
        [rnntune, "run", str(spec), "--job-id", job_id], stdout=out, stderr=subprocess.STDOUT
    )


def test_storage_turned_read_only_mid_search_fails_the_job_and_registers_nothing(
    mlflow_server, small_disk, tmp_path, ray_env
):
    """Case 1 of issue 11: both trials ERROR on the read-only storage after some epochs; the
    job is failed (exit 1) with that cause, not a success with a model from a cut-short trial."""
    raw = _two_digit_trials(
        tmp_path, mlflow_server, "read-only", 300, storage={"url": str(small_disk)}
    )
    proc = _start(tmp_path, raw, "readonly")
    client = MlflowClient(mlflow_server)
    _wait_until_both_logged(client, "readonly", proc)  # each has checkpointed an epoch too
    for _ in range(100):  # EBUSY while a checkpoint is being written: again
        if subprocess.run(["mount", "-o", "remount,ro", str(small_disk)]).returncode == 0:
            break
        time.sleep(0.05)
    code = proc.wait(timeout=300)
    log = (tmp_path / "readonly.log").read_text()
    assert code == 1, log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("outcome: failed (2 trials: 2 error); first cause: OSError:"), last
    assert "Read-only file system" in last
    parent, children = _job_runs(client, "readonly")
    assert parent.info.status == "FAILED" and "Read-only" in parent.data.tags[O.CAUSE_TAG]
    for run in children:
        assert run.info.status == "FAILED" and run.data.tags[O.TRIAL_END_TAG] == O.ERROR
        assert run.data.tags["failure_reason"].startswith("OSError: "), run.data.tags
    assert client.search_model_versions("name = 'read-only'") == []  # nothing registered


def test_a_full_disk_fails_the_job_with_that_cause_and_closes_every_run(
    small_disk, tmp_path, ray_env
):
    """Case 2 of issue 11: checkpoints and the embedded MLflow store share a 12 MiB disk that
    fills mid-search. The job is failed (exit 1), first cause ENOSPC, and no run is left
    RUNNING: the store's reserve is released to record the end. Four trials, two at a time: the
    later two have their runs created while the disk fills (issue 21)."""
    raw = _two_digit_trials(
        tmp_path,
        "unused",
        "full-disk",
        1000,
        model={"cell_type": "gru", "hidden_size": 96},  # ~0.4 MB checkpoints: full sooner
        search_space={"lr": {"grid": [0.01, 0.003, 0.002, 0.001]}},
        storage={"url": str(small_disk), "keep_checkpoints": 1000},
        tracking={"experiment": "failure-tests"},  # the embedded store, on the same disk
    )
    code = _start(tmp_path, raw, "full").wait(timeout=600)
    log = (tmp_path / "full.log").read_text()
    assert code == 1, log[-3000:]
    # Tune may fail after the trials, reading back a file the full disk truncated: the trials'
    # error is still the job's cause, Tune's follows on stderr
    last = next(line for line in log.splitlines() if line.startswith("outcome: "))
    assert last.startswith("outcome: failed (4 trials: ") and "first cause: OSError:" in last
    assert "No space left on device" in last and "Traceback" not in log.split(last)[1]
    assert "SQLAlchemy database error" not in log  # the refused writes are one line each
    assert "released the store's 4 MB reserve" in log
    client = MlflowClient(f"sqlite:///{small_disk / 'mlflow.db'}")
    parent, children = _job_runs(client, "full")
    assert parent.info.status == "FAILED" and parent.data.tags[O.OUTCOME_TAG] == O.FAILED
    assert "No space left" in parent.data.tags[O.CAUSE_TAG]
    assert len(children) == 4 and "RUNNING" not in [r.info.status for r in children], [
        (r.info.status, r.data.tags.get(O.TRIAL_END_TAG)) for r in children
    ]
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) >= 2 and all(
        "No space left" in r.data.tags["failure_reason"] for r in failed
    )


def test_sigterm_stops_the_job_with_exit_130_and_closes_its_runs(mlflow_server, tmp_path, ray_env):
    """What `kill`, a container stop or Ray's stop_job sends. Ray's own handler used to abort
    the driver 3 s in (exit -6), and Ray turned ours into SystemExit(1)."""
    raw = _two_digit_trials(tmp_path, mlflow_server, "sigterm", 400, registry={"enabled": False})
    proc = _start(tmp_path, raw, "sigterm")
    try:
        _wait_until_both_logged(MlflowClient(mlflow_server), "sigterm", proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "sigterm.log").read_text()
    assert code == 130, log[-3000:]
    assert "outcome: stopped (2 trials: 2 interrupted)" in log
    parent, children = _job_runs(MlflowClient(mlflow_server), "sigterm")
    assert parent.info.status == "KILLED" and parent.data.tags[O.OUTCOME_TAG] == O.STOPPED
    assert [r.info.status for r in children] == ["KILLED", "KILLED"]
