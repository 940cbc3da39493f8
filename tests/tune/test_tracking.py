"""The trial logger against a real (embedded SQLite) MLflow store: batching, resume, statuses."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial
from sqlalchemy.exc import OperationalError

from service.stack import free_port
from tune import trial_logger as trial_logger_module
from tune import writer as writer_module
from tune.parent_run import TrialRuns, open_parent_run
from tune.spec import parse_job_spec
from tune.system_metrics import (
    INTERVAL_ENV,
    NODE_TAG,
    PREFIX,
    SystemMetrics,
    start_system_metrics,
)
from tune.tracking import setup_tracking
from tune.trial_logger import MlflowTrialLogger
from tune.writer import OrderedWriter, transient


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
    assert logger.writer.drain(30)


def test_epochs_are_batched_and_all_sent_by_the_trial_end(store):
    _, _, client = store
    logger, trial = _logger(store, "batched"), _trial("b_00000")
    logger.on_trial_start(0, [trial], trial)
    for epoch in (1, 2, 3):
        logger.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": epoch / 10})
    _wait(logger)
    run_id = logger.runs[trial.trial_id]
    assert _steps(client, run_id) == [1]  # the first epoch at once, the next two held back
    logger.on_trial_complete(0, [trial], trial)
    _wait(logger)
    assert _steps(client, run_id) == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["hidden_size"] == "24"


def test_a_trials_last_epoch_goes_with_its_end_tags_in_one_write(store, monkeypatch):
    """Short trials: each MLflow write costs the driver CPU the trials share; the last epoch's
    metrics wait the moment until the trial's end and go with its end tags."""
    spec, tracking, client = store
    one_epoch = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_epochs": 1})})
    parent = open_parent_run(client, tracking, one_epoch, "last-epoch")
    logger = MlflowTrialLogger(tracking, one_epoch, "last-epoch", parent, TrialRuns({}, {}))
    batches = []
    log_batch = logger.client.log_batch
    monkeypatch.setattr(
        logger.client, "log_batch", lambda *a, **k: batches.append(k) or log_batch(*a, **k)
    )
    trial = _trial("l_00000")
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_result(0, [trial], trial, {"epoch": 1, "val_acc": 0.5})
    logger.on_step_end(0, [trial])  # not yet due
    _wait(logger)
    run_id = logger.runs[trial.trial_id]
    assert _steps(client, run_id) == []  # held: the trial ends now
    logger.on_trial_complete(0, [trial], trial)
    _wait(logger)
    run = client.get_run(run_id)
    assert _steps(client, run_id) == [1] and run.info.status == "FINISHED"
    assert run.data.tags["rnntune.trial_end"] == "completed"
    assert [sorted(k for k, v in b.items() if v) for b in batches] == [
        ["params"],
        ["metrics", "tags"],
    ]
    # a trial whose end is late still has its last epoch sent after FLUSH_EVERY_S
    late = _trial("l_00001")
    logger.on_trial_start(0, [late], late)
    logger.on_trial_result(0, [late], late, {"epoch": 1, "val_acc": 0.25})
    monkeypatch.setattr(trial_logger_module, "FLUSH_EVERY_S", 0.0)
    logger.on_step_end(1, [late])
    _wait(logger)
    assert _steps(client, logger.runs[late.trial_id]) == [1]


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
    monkeypatch.setattr(trial_logger_module, "FLUSH_EVERY_S", 0.0)  # as if FLUSH_EVERY_S had passed
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
    _wait(logger)
    run = client.get_run(orphan)
    assert run.info.status == "RUNNING"
    assert run.data.params["hidden_size"] == "32"
    logger.on_trial_complete(0, [trial], trial)
    _wait(logger)
    assert client.get_run(orphan).info.status == "FINISHED"


class _Outage:
    """A stand-in MLflow call: fails like a server that is down for its first `down` calls."""

    def __init__(self, down: int, error: Exception | None = None) -> None:
        self.down, self.calls = down, 0
        self.error = error or ConnectionError("Connection refused")

    def __call__(self, sent: list, item: int) -> None:
        self.calls += 1
        if self.calls <= self.down:
            raise self.error
        sent.append(item)


def test_writes_held_through_an_outage_arrive_once_and_in_order(monkeypatch):
    monkeypatch.setattr(writer_module.time, "sleep", lambda s: None)  # no real backoff waits
    writer, sent, server = OrderedWriter("test"), [], _Outage(down=6)
    for i in range(50):
        writer.submit(lambda i=i: server(sent, i))
    assert writer.drain(30)
    assert sent == list(range(50)) and writer.lost == 0


def test_a_closed_writer_sends_its_queue_then_ends_and_a_later_write_still_goes():
    writer, sent, gate = OrderedWriter("test"), [], threading.Event()
    writer.submit(gate.wait)  # the thread is busy: the close finds a queue
    writer.submit(lambda: sent.append(1))
    writer.close()
    gate.set()
    writer._thread.join(10)
    assert sent == [1] and not writer._thread.is_alive()  # queue sent, then the thread ended
    writer.submit(lambda: sent.append(2))  # after the close: a thread again, the write sent
    assert writer.drain(10) and sent == [1, 2]


def test_a_refused_write_is_dropped_and_counted_the_rest_go_on():
    writer, sent = OrderedWriter("test"), []
    refused = _Outage(down=1, error=MlflowException("bad", INVALID_PARAMETER_VALUE))
    writer.submit(lambda: sent.append(0))
    writer.submit(lambda: refused(sent, 1))
    writer.submit(lambda: sent.append(2))
    assert writer.drain(30)
    assert sent == [0, 2] and writer.lost == 1
    assert writer.errors == ["MLflow refused a write: MlflowException: bad"]


def test_an_outage_beyond_the_budget_drops_the_queue_and_says_how_much(capsys):
    writer, sent, server = OrderedWriter("http://down", give_up_after_s=0.3), [], _Outage(10**6)
    for i in range(3):
        writer.submit(lambda i=i: server(sent, i))
    assert writer.drain(30)
    assert sent == [] and writer.lost == 3
    assert "3 tracking writes dropped" in capsys.readouterr().err


def test_which_failures_are_an_outage():
    down = (
        "API request to http://127.0.0.1:5000/api/2.0/mlflow/runs/log-batch failed with exception"
    )
    assert transient(MlflowException(f"{down} Max retries exceeded"))
    assert transient(ConnectionRefusedError("refused"))
    assert transient(OperationalError("INSERT", {}, Exception("database is locked")))
    assert not transient(OperationalError("INSERT", {}, Exception("database or disk is full")))
    assert not transient(MlflowException("Run 'x' not found", RESOURCE_DOES_NOT_EXIST))
    assert not transient(MlflowException("bad", INVALID_PARAMETER_VALUE))
    assert not transient(OSError(28, "No space left on device"))


def test_child_run_carries_its_best_epoch_not_its_last(store):
    _, _, client = store
    logger, trial = _logger(store, "best"), _trial("best_0000")
    logger.on_trial_start(0, [trial], trial)
    for epoch, acc in ((1, 0.5), (2, 0.8), (3, 0.7), (4, float("nan"))):
        result = {"epoch": epoch, "val_acc": acc, "non_finite": "val_acc" if acc != acc else ""}
        logger.on_trial_result(0, [trial], trial, result)
    logger.on_trial_complete(0, [trial], trial)
    _wait(logger)
    run = client.get_run(logger.runs[trial.trial_id])
    assert run.data.metrics["val_acc"] == 0.7  # MLflow's latest: the last finite epoch
    assert run.data.metrics["best_val_acc"] == 0.8 and run.data.metrics["best_epoch"] == 2
    assert logger.best[trial.trial_id] == (0.8, 2)


def test_child_run_params_are_those_that_apply(store):
    _, _, client = store
    logger = _logger(store, "applied")
    trial = Trial(
        "run_trial",
        config={"cell_type": "gru", "num_layers": 1, "optimizer": "adam"},
        stub=True,
        trial_id="app_0000",
    )
    logger.on_trial_start(0, [trial], trial)
    logger.on_trial_complete(0, [trial], trial)
    _wait(logger)
    params = client.get_run(logger.runs[trial.trial_id]).data.params
    assert {"cell_type", "num_layers", "hidden_size", "lr", "optimizer"} <= set(params)
    # a GRU has no forget gate, one layer no inter-layer dropout, Adam no momentum, digits no
    # characters to embed, no schedule reads lr_gamma, nothing clips
    for absent in ("forget_bias", "dropout", "momentum", "embedding_dim", "lr_gamma"):
        assert absent not in params, absent
    assert "grad_clip_algorithm" not in params and "autoclip_percentile" not in params


def test_child_runs_carry_the_user_and_source(store):
    _, _, client = store
    logger, trial = _logger(store, "who"), _trial("who_0000")
    logger.on_trial_start(0, [trial], trial)
    _wait(logger)
    tags = client.get_run(logger.runs[trial.trial_id]).data.tags
    parent_tags = client.get_run(logger.parent_id).data.tags
    for key in ("mlflow.user", "mlflow.source.type", "mlflow.source.name"):
        assert tags[key] and tags[key] == parent_tags[key], key


def _system_points(client: MlflowClient, run_id: str, name: str = "cpu_utilization_percentage"):
    return sorted(client.get_metric_history(run_id, PREFIX + name), key=lambda m: m.step)


def test_system_metrics_sample_the_machine_onto_the_parent_run_and_resume_their_steps(
    store, monkeypatch
):
    spec, tracking, client = store
    parent = open_parent_run(client, tracking, spec, "system")
    writer = OrderedWriter(tracking.uri)
    sampler = SystemMetrics(client, parent, writer.submit, interval=0.2).start()
    assert "CPUMonitor" in sampler.names  # GPUMonitor joins where NVML finds a GPU
    deadline = time.monotonic() + 20
    while sampler.step < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    sampler.stop()
    assert writer.drain(30) and writer.lost == 0
    cpu = _system_points(client, parent)
    assert len(cpu) >= 4 and [m.step for m in cpu] == list(range(len(cpu)))
    assert all(0 <= m.value <= 100 for m in cpu)
    assert [m.timestamp for m in cpu] == sorted(m.timestamp for m in cpu)
    memory = _system_points(client, parent, "system_memory_usage_megabytes")
    assert len(memory) == len(cpu) and all(m.value > 0 for m in memory)
    assert _system_points(client, parent, "disk_usage_percentage")
    # a resumed job's driver goes on from the next step, and names its host
    monkeypatch.setenv(INTERVAL_ENV, "0.2")
    again = start_system_metrics(client, parent, writer.submit)
    time.sleep(0.5)
    again.stop()
    assert writer.drain(30)
    steps = [m.step for m in _system_points(client, parent)]
    assert steps == list(range(len(steps))) and len(steps) > len(cpu)
    assert client.get_run(parent).data.tags[NODE_TAG] == socket.gethostname()


def test_system_metrics_stop_at_once_while_mlflow_is_down_and_keep_their_samples(monkeypatch):
    """MLflow's own monitor ends for good at the first unreachable request, and its `finish()`
    waits on it: here samples queue on the writer, and stopping does not wait for MLflow."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(f"http://127.0.0.1:{free_port()}")
    writer = OrderedWriter("down", give_up_after_s=5)  # then gives up: the test is over
    sampler = SystemMetrics(down, "0" * 32, writer.submit, interval=0.1).start()
    deadline = time.monotonic() + 20  # a sample each 0.1 s; slower on a loaded machine
    while writer.queued < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.5  # at most the one second stop() gives a sample
    assert writer.queued >= 5 and writer.lost == 0  # held for MLflow's return, none dropped
