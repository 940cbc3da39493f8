"""MLflow tracking of a job: one parent run per job, one child run per trial, logged from the driver.

Only the driver talks to MLflow (a Tune callback), so trials need no MLflow access and an
embedded SQLite store sees one writer. The callback's writes go through an `OrderedWriter`: one
background thread that sends them in order and holds them through an MLflow outage, so Tune's
event loop never waits for MLflow. Metrics are batched: each write costs the driver ~9 ms of CPU
whatever its size (taken from the trials on the same cores), so a trial's first epoch is sent at
once, later ones at most every `FLUSH_EVERY_S`, and the rest at its end. Epochs longer than that
(most real ones) are each sent as they come; a driver killed outright can lose the last
`FLUSH_EVERY_S` of metric points of a trial with shorter ones, and whatever an MLflow outage
still held back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune
from sqlalchemy import event

from lightning_modules.metrics import REPORTED, reported
from tune import compat
from tune import outcome as O
from tune.outcome import JOB_TAG, PARENT_TAG, TRIAL_TAG
from tune.registry import job_user
from tune.spec import DEFAULT_STORAGE, JobSpec, embedded_tracking_uri
from tune.trials import DIVERGED, DIVERGED_REASON, NON_FINITE
from tune.writer import OrderedWriter, WaitsForParked, parks

FLUSH_EVERY_S = 2.0  # how far a running trial's metrics in MLflow may lag behind it
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment_id: str
    reserve: str | None = None  # the embedded store's reserve file (see `hold_reserve`)

    def release_reserve(self) -> bool:
        """Frees the reserve (once) for the store's last writes on a full disk; False if gone."""
        if self.reserve is None or not os.path.exists(self.reserve):
            return False
        os.unlink(self.reserve)
        print(
            f"rnntune: disk full; released the store's {RESERVE_BYTES >> 20} MB reserve to record the job's end",
            file=sys.stderr,
        )
        return True


RESERVE_BYTES = 4 << 20


def hold_reserve(root: Path) -> str | None:
    """A 4 MB file of real blocks next to the embedded store, on the disk that also takes the
    checkpoints: when the checkpoints fill it, deleting this leaves the store room to close the
    job's runs with their outcome. None if the disk has no room for it even now."""
    path = root / "mlflow.db.reserve"
    try:
        if not path.exists() or path.stat().st_size < RESERVE_BYTES:
            with open(path, "wb") as f:
                f.write(b"\0" * RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return str(path)


def setup_tracking(spec: JobSpec, local_root: Path | None) -> Tracking:
    """Resolve the tracking URI (embedded SQLite under local storage by default) and experiment."""
    reserve = None
    if spec.tracking.uri:
        uri, artifacts = spec.tracking.uri, None
    else:
        root = (local_root or Path("runs")).resolve()
        root.mkdir(parents=True, exist_ok=True)
        reserve = hold_reserve(root)
        uri = embedded_tracking_uri(root)
        artifacts = (root / "mlartifacts").as_uri()
    if artifacts is not None:
        # a new store says "Creating initial MLflow database tables..." and "Updating database
        # tables" at INFO on the console when the client opens it: nothing a user acts on
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    client = MlflowClient(uri)
    if artifacts is not None:
        _commit_without_fsync(client)
    name = spec.tracking.experiment or spec.name
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # MLflow 3's UI opens an experiment by this tag: model training, not its GenAI view
        exp_id = client.create_experiment(
            name, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    else:
        exp_id = exp.experiment_id
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return Tracking(uri, exp_id, reserve)


def open_ui_hint(spec: JobSpec, tracking: Tracking, job_id: str, parent_id: str) -> str:
    """The one command (or URL) that shows this job's runs."""
    if tracking.uri.startswith("http"):
        return f"open {O.run_url(tracking.uri, tracking.experiment_id, parent_id)}"
    if spec.tracking.uri:  # a database URI of the user's
        return f"rnntune ui {job_id} --tracking-uri {tracking.uri}"
    storage = "" if spec.storage.url == DEFAULT_STORAGE else f" --storage {spec.storage.url}"
    return f"rnntune ui {job_id}{storage}"


def _commit_without_fsync(client: MlflowClient) -> None:
    """The embedded SQLite store in WAL mode with `synchronous=NORMAL`: no fsync per commit.

    In SQLite's default mode every MLflow write (one per trial epoch) fsyncs the database and its
    rollback journal, on the disk the trials write their checkpoints to. WAL with NORMAL keeps
    every commit across a killed process (a killed driver loses nothing); only a power cut can
    drop the last ones. Measured with bench/tracking_overhead.py (8 rounds, 2 cores): tracking
    cost 1.075x in wall time with the store on disk in the default mode, 1.012x on tmpfs.
    """
    engine = compat.sqlalchemy_engine(client)
    if not event.contains(engine, "connect", _sqlite_pragmas):
        event.listen(engine, "connect", _sqlite_pragmas)
        engine.dispose()  # connections opened before the listener reopen with the pragmas


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: readers see it too
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")  # per connection


def dataset_input(spec: JobSpec) -> DatasetInput:
    """The job's data as an MLflow dataset input: source, digest, schema and row count.

    User data is described from its files' metadata (the digest is the one the registry uses as
    the data fingerprint); built-in datasets by their generator and options.
    """
    cfg = spec.data
    if cfg.name == "sequences":
        from lightning_modules.data.inspect import describe

        d = describe(cfg)
        source, digest = d.source, d.digest
        schema = {"mlflow_colspec": [{"name": k, "type": v} for k, v in d.schema.items()]}
        profile = {"num_rows": d.rows, "files": d.files, "bytes": d.bytes, "format": d.format}
    else:
        options = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
        source = getattr(cfg, "url", None) or f"package://{cfg.name}"
        digest = hashlib.sha256(options.encode()).hexdigest()[:16]
        schema, profile = {}, {"options": cfg.model_dump(mode="json")}
    dataset = Dataset(
        name=cfg.name,
        digest=digest,
        source_type="http" if "://" in source else "local",
        source=json.dumps({"url": source}),
        schema=json.dumps(schema),
        profile=json.dumps(profile),
    )
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train/val/test")])


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
BEST_EPOCH = "best_epoch"  # the epoch of a trial's best value of the job's metric


def best_name(metric: str) -> str:
    """`val_acc` -> `best_val_acc`: a trial's best epoch's value (its latest value is the best
    so far)."""
    return f"best_{metric}"


def improves(value: float, best: tuple[float, int] | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best[0] if mode == "max" else value < best[0])


def source_tags() -> dict[str, str]:
    """Who ran it and what: the UI's User and Source columns, on the parent and every trial."""
    return {
        "mlflow.user": job_user(),
        "mlflow.source.type": "JOB",
        "mlflow.source.name": "rnntune (python -m tune)",
    }


def trial_params(spec: JobSpec, config: dict[str, Any]) -> dict[str, str]:
    """A trial's hyperparameters, flat, with the same name in every child run: those that take
    effect for its model and optimiser (`TrainSpec.applied_settings`), seed, epochs, data."""
    trial = spec.trial_spec(config)
    flat = trial.applied_settings()
    flat.update(
        seed=trial.trainer.seed, max_epochs=trial.trainer.max_epochs, dataset=trial.data.name
    )
    return {k: str(v) for k, v in flat.items()}


def open_parent_run(
    client: MlflowClient,
    tracking: Tracking,
    spec: JobSpec,
    job_id: str,
    dataset: DatasetInput | None = None,
) -> str:
    """The job's parent run: reused when the job is resumed, created otherwise."""
    found = client.search_runs(
        [tracking.experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job_id}'", max_results=10
    )
    parents = [r for r in found if PARENT_TAG not in r.data.tags]
    if parents:
        client.update_run(parents[0].info.run_id, status="RUNNING")
        return parents[0].info.run_id
    run = client.create_run(
        tracking.experiment_id,
        run_name=job_id,
        tags={
            JOB_TAG: job_id,
            "rnntune.dataset": spec.data.name,
            "rnntune.kind": "job",
            **source_tags(),
        },
    )
    metric, mode = spec.monitor
    params = {
        "dataset": spec.data.name,
        "search_algorithm": spec.search.algorithm,
        "scheduler": spec.scheduler.name,
        "num_samples": spec.samples if spec.samples > 0 else "until the time budget",
        "time_budget_s": spec.budget.time_budget_s,
        "max_epochs": spec.max_epochs,
        "metric": metric,
        "mode": mode,
        "cpus_per_trial": spec.resources.cpus,
        "gpus_per_trial": spec.resources.gpus,
    }
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    client.log_dict(run.info.run_id, spec.model_dump(mode="json"), "job_spec.json")
    if dataset is not None:
        client.log_inputs(run.info.run_id, datasets=[dataset])
    return run.info.run_id


@dataclass
class TrialRuns:
    """A job's child runs so far: a resumed job continues them instead of duplicating them."""

    runs: dict[str, str]  # trial_id -> child run id
    ends: dict[str, O.TrialEnd]  # trial_id -> how it ended (trials that did)


def existing_trial_runs(client: MlflowClient, tracking: Tracking, parent_id: str) -> TrialRuns:
    found = client.search_runs(
        [tracking.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
        max_results=10_000,
    )
    runs, ends = {}, {}
    for r in found:
        trial_id = r.data.tags.get(TRIAL_TAG)
        if trial_id is None:
            continue
        runs[trial_id] = r.info.run_id
        end = r.data.tags.get(O.TRIAL_END_TAG)
        if end in O.TRIAL_ENDS and r.info.status != "RUNNING":
            ends[trial_id] = O.TrialEnd(end, r.data.tags.get(O.FAILURE_REASON_TAG, ""))
    return TrialRuns(runs, ends)


def trial_error(trial) -> str:
    """The exception a failed trial raised, in one line (`FileNotFoundError: ...`).

    Read from the error file Tune writes in the trial's local folder at the failure, not from
    the job's storage: that copy is synced later, or never when the storage refuses writes.
    """
    path = trial.error_file
    if path and Path(path).is_file():
        return O.exception_line(Path(path).read_text(errors="replace"))
    text = trial.get_error()
    return O.exception_line(text) if text else "the trial failed without an error message"


class MlflowTrialLogger(ray_tune.Callback):
    """Driver-side Tune callback: a nested child run per trial with params, epoch metrics, status.

    Callbacks decide what to write and queue it on an `OrderedWriter`: they never wait for
    MLflow, so an outage holds the writes back but not the search. Everything the writes need
    from MLflow (a new run's id, how far a reopened run was logged) is read on the writer's
    thread, in order, when the write before it is done.
    """

    def __init__(
        self,
        tracking: Tracking,
        spec: JobSpec,
        job_id: str,
        parent_id: str,
        existing: TrialRuns,
        dataset: DatasetInput | None = None,
    ) -> None:
        self.tracking = tracking
        self.dataset = dataset
        self.spec = spec
        self.job_id = job_id
        self.parent_id = parent_id
        self.runs = dict(existing.runs)  # trial_id -> run id (filled in by the writer)
        # trials whose run is still to be created (queued, or parked for a full disk): their
        # writes wait for it, in order
        self.creating: set[str] = set()
        self.trials = set(existing.runs)  # trials with a run, or one queued to be created
        self.ends: dict[str, O.TrialEnd] = dict(existing.ends)  # how each ended trial ended
        self.resumed = set(existing.runs)  # runs of an earlier driver: RUNNING again if restarted
        self.stopped: set[str] = set()
        self.diverged: dict[str, str] = {}  # trial_id -> why
        self.buffered: dict[str, list[Metric]] = {}  # trial_id -> metrics not yet queued
        self.flushed_at: dict[str, float] = {}  # trial_id -> time.monotonic() of its last send
        self.configs: dict[str, dict] = {}
        self.explorations: dict[str, int] = {}
        # run id -> the last epoch logged to it: a trial restarted from an older checkpoint
        # (a retry, a resumed job) trains some epochs again; MLflow keeps their first values.
        self.logged_through: dict[str, int] = {}
        # trial_id -> (best value of the job's metric, its epoch): logged as best_<metric> and
        # best_epoch whenever it improves, so MLflow's compare page ranks trials by their best
        # epoch, the definition of "best" the summary and the registry use.
        self.best: dict[str, tuple[float, int]] = {}
        self._client: MlflowClient | None = None
        self._writer: OrderedWriter | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking.uri)
        return self._client

    @property
    def writer(self) -> OrderedWriter:
        if self._writer is None:
            self._writer = OrderedWriter(self.tracking.uri)
        return self._writer

    def __getstate__(self) -> dict:  # Tune pickles callbacks with its experiment state
        # copies: the writer's thread adds to `runs` and `logged_through` meanwhile
        state = {k: dict(v) if isinstance(v, dict) else v for k, v in self.__dict__.items()}
        state |= {"_client": None, "_writer": None, "buffered": {}, "flushed_at": {}}
        return state | {"creating": set()}  # a restored logger's writer has nothing queued

    def drain(self, timeout: float | None = None) -> bool:
        """Every metric buffered so far queued, and every queued write delivered."""
        for trial_id in list(self.buffered):
            self._flush(trial_id)
        return self.writer.drain(timeout)

    def _write(self, trial_id: str, write) -> None:
        """Queue `write(run_id)` for the trial's run, after everything queued before it."""

        def send() -> None:
            run_id = self.runs.get(trial_id)
            if run_id is None and trial_id in self.creating:  # parked for a full disk
                raise WaitsForParked(f"trial {trial_id}'s run is not created yet")
            if run_id is None:  # refused by MLflow, so not retried: nor is what follows
                raise LookupError(f"trial {trial_id} has no MLflow run (creating it failed)")
            write(run_id)

        self.writer.submit(send)

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        trial_id = trial.trial_id
        if trial_id in self.trials:  # restarted (retry, PBT exploit, resumed job)
            self.ends.pop(trial_id, None)
            if trial_id in self.resumed:
                self.resumed.discard(trial_id)
                config = dict(trial.config)
                self._write(trial_id, lambda run_id: self._reopen(trial_id, run_id, config))
            self._record_new_config(trial)
            return
        self.trials.add(trial_id)
        self.configs[trial_id] = dict(trial.config)
        self.creating.add(trial_id)
        self.writer.submit(_RunCreation(self, trial_id))
        params = trial_params(self.spec, trial.config)
        self._write(trial_id, lambda run_id: self._log_params(run_id, params))
        if self.dataset is not None:
            dataset = self.dataset
            self._write(trial_id, lambda run_id: self.client.log_inputs(run_id, datasets=[dataset]))

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])

    def _reopen(self, trial_id: str, run_id: str, config: dict) -> None:
        """A trial of an earlier, killed driver restarts: its run is RUNNING again, with params.

        The run may have ended before the kill (Tune's saved state can predate a trial's end),
        and a driver killed between creating a run and logging its params left it without them.
        """
        if not self.client.get_run(run_id).data.params:
            self._log_params(run_id, trial_params(self.spec, config))
        history = self.client.get_metric_history(run_id, REPORTED[0])
        self.logged_through[run_id] = max((m.step for m in history), default=0)
        metric, _ = self.spec.monitor
        best = self.client.get_metric_history(run_id, best_name(metric))
        if best and trial_id not in self.best:
            last = max(best, key=lambda m: m.step)
            self.best[trial_id] = (last.value, last.step)
        self.client.update_run(run_id, status="RUNNING")

    def on_trial_restore(self, iteration: int, trials: list, trial, **info) -> None:
        self._record_new_config(trial)

    def _record_new_config(self, trial) -> None:
        """PBT exploits by restarting a trial from another's checkpoint with a mutated config.

        MLflow params are immutable, so each new config is a tag `pbt.explore.<n>` (JSON with the
        epoch it starts at); per-epoch `lr` shows the learning rate actually used.
        """
        old = self.configs.get(trial.trial_id)
        new = dict(trial.config)
        if old is None or old == new:
            self.configs[trial.trial_id] = new
            return
        self.configs[trial.trial_id] = new
        n = self.explorations[trial.trial_id] = self.explorations.get(trial.trial_id, 0) + 1
        epoch = int((trial.last_result or {}).get("epoch", 0))
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        tag = (f"pbt.explore.{n}", json.dumps({"from_epoch": epoch, **changed}))
        self._write(trial.trial_id, lambda run_id: self.client.set_tag(run_id, *tag))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if trial.trial_id not in self.trials:
            return
        self._record_new_config(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        self._log_epoch(trial.trial_id, step, result)
        if result.get(DIVERGED):
            self.diverged[trial.trial_id] = str(result.get(DIVERGED_REASON) or "diverged")
        # A result marked done reaches callbacks only when the scheduler (not the trial) ended it.
        if result.get("done") and step < self.spec.max_epochs and not result.get(DIVERGED):
            self.stopped.add(trial.trial_id)

    def _log_epoch(self, trial_id: str, step: int, result: dict) -> None:
        now = int(time.time() * 1000)  # when the epoch was reported, not when MLflow got it
        skip = set(str(result.get(NON_FINITE) or "").split(","))  # imputed for the scheduler
        metrics = [
            Metric(k, float(result[k]), now, step) for k in reported(result) if k not in skip
        ]
        metric, mode = self.spec.monitor
        value = result.get(metric)
        if value is not None and metric not in skip and not result.get(DIVERGED):
            if improves(float(value), self.best.get(trial_id), mode):
                self.best[trial_id] = (float(value), step)
                metrics += [
                    Metric(best_name(metric), float(value), now, step),
                    Metric(BEST_EPOCH, float(step), now, step),
                ]
        self.buffered.setdefault(trial_id, []).extend(metrics)
        last = self.flushed_at.get(trial_id)
        if last is None or time.monotonic() - last >= FLUSH_EVERY_S:
            self._flush(trial_id)  # the first epoch at once, then at most every FLUSH_EVERY_S

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        """Buffers of trials that stopped reporting for a while (paused, slow) go out too."""
        now = time.monotonic()
        for trial_id in [t for t in self.buffered if now - self.flushed_at[t] >= FLUSH_EVERY_S]:
            self._flush(trial_id)

    def _flush(self, trial_id: str) -> None:
        metrics = self.buffered.pop(trial_id, [])
        self.flushed_at[trial_id] = time.monotonic()
        if metrics:
            self._write(trial_id, lambda run_id: self._send_metrics(run_id, metrics))

    def _send_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        """Epochs past the last one logged to the run; epochs trained again are left out."""
        through = self.logged_through.get(run_id, 0)
        new = [m for m in metrics if m.step > through]
        for i in range(0, len(new), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=new[i : i + MAX_METRICS_PER_BATCH])
        self.logged_through[run_id] = max([through, *(m.step for m in new)])

    def _finish(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        if trial_id not in self.trials:
            return
        self._flush(trial_id)
        if tags:
            batch = [RunTag(k, v) for k, v in tags.items()]
            self._write(trial_id, lambda run_id: self.client.log_batch(run_id, tags=batch))
        end = int(time.time() * 1000)
        # Not `set_terminated`: in MLflow 3.17 it shuts down the store's whole async-logging
        # queue and waits ~1 s for its thread; ending the run on the store is all it needs.
        self._write(
            trial_id,
            lambda run_id: compat.tracking_store(self.client).update_run_info(
                run_id, RunStatus.from_string(status), end, None
            ),
        )

    def _end(self, trial_id: str, end: str, reason: str = "", **tags: str) -> None:
        """Records how a trial ended, here and on its run (status, end tag, failure reason)."""
        self.ends[trial_id] = O.TrialEnd(end, reason)
        tags = {O.TRIAL_END_TAG: end, **tags}
        if reason:
            tags[O.FAILURE_REASON_TAG] = reason
        self._finish(trial_id, O.RUN_STATUS.get(end, "FINISHED"), tags)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        trial_id = trial.trial_id
        if trial_id in self.diverged:
            self._end(trial_id, O.DIVERGED, f"diverged at {self.diverged[trial_id]}")
        elif trial_id in self.stopped:
            # Stopping hopeless trials is the scheduler's job: FINISHED, not a red "KILLED".
            self._end(trial_id, O.EARLY_STOPPED, stopped_by=self.spec.scheduler.name)
        else:
            self._end(trial_id, O.COMPLETED)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial.trial_id, O.ERROR, trial_error(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """A failed attempt that Tune retries (e.g. its Ray node died): recorded on the run."""
        if trial.trial_id in self.trials:
            n = trial.run_metadata.num_failures
            tags = [
                RunTag("rnntune.retries", str(n)),
                RunTag(f"rnntune.retry.{n}", trial_error(trial)),
            ]
            self._write(trial.trial_id, lambda run_id: self.client.log_batch(run_id, tags=tags))

    def close_unfinished(
        self, stopped_by: str = "job", timeout: float | None = None, end: str = O.INTERRUPTED
    ) -> bool:
        """Runs of trials that never ended end as `end`: interrupted (KILLED) when the job was
        stopped, budget-stopped (FINISHED) when the search's time ran out; then every write is
        delivered. False if that took longer than `timeout` (MLflow still down)."""
        if not self.drain(timeout):
            return False
        if self.writer.parked and self.tracking.release_reserve():
            self.writer.replay()
            if not self.drain(timeout):
                return False
        for trial_id, run_id in list(self.runs.items()):
            if trial_id not in self.ends and self.client.get_run(run_id).info.status == "RUNNING":
                self._end(trial_id, end, stopped_by=stopped_by)
        return self.drain(timeout)

    def backfill(self, results) -> int:
        """Epochs Tune recorded that never reached MLflow (a killed driver's writes still
        queued, or held through an outage it did not outlive), logged now from the trials'
        stored results at their epochs and times. Returns the number of points."""
        sent = 0
        for r in results:
            df, run_id = r.metrics_dataframe, self.runs.get(str(r.metrics.get("trial_id")))
            if df is None or run_id is None or "epoch" not in df:
                continue
            missing = []
            for key in reported(df.columns):
                have = {m.step for m in self.client.get_metric_history(run_id, key)}
                for _, row in df.iterrows():
                    step, value = int(row["epoch"]), row[key]
                    imputed = key in str(row.get(NON_FINITE) or "").split(",")
                    if step in have or imputed or not math.isfinite(float(value)):
                        continue
                    have.add(step)
                    when = int(float(row.get("timestamp", time.time())) * 1000)
                    missing.append(Metric(key, float(value), when, step))
            missing += self._backfill_best(run_id, df)
            for i in range(0, len(missing), MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=missing[i : i + MAX_METRICS_PER_BATCH])
            sent += len(missing)
        return sent

    def _backfill_best(self, run_id: str, df) -> list[Metric]:
        """best_<metric> and best_epoch at the best stored epoch, if the run lacks them."""
        metric, mode = self.spec.monitor
        if metric not in df:
            return []
        best, when = None, 0
        for _, row in df.iterrows():
            imputed = metric in str(row.get(NON_FINITE) or "").split(",")
            if imputed or row.get(DIVERGED):
                continue
            if improves(float(row[metric]), best, mode):
                best = (float(row[metric]), int(row["epoch"]))
                when = int(float(row.get("timestamp", time.time())) * 1000)
        have = {m.step for m in self.client.get_metric_history(run_id, best_name(metric))}
        if best is None or best[1] in have:
            return []
        return [
            Metric(best_name(metric), best[0], when, best[1]),
            Metric(BEST_EPOCH, float(best[1]), when, best[1]),
        ]


class _RunCreation:
    """Queued write: a trial's child run. Sent again after an outage, it first looks for the
    run the lost answer may have created, so a retry never makes a second one."""

    def __init__(self, logger: MlflowTrialLogger, trial_id: str) -> None:
        self.logger, self.trial_id, self.tried = logger, trial_id, False

    def __call__(self) -> None:
        try:
            self._create()
        except Exception as e:
            if not parks(e):  # refused: the trial's writes have no run and are dropped
                self.logger.creating.discard(self.trial_id)
            raise  # a full disk parks it, and its writes behind it (`OrderedWriter.replay`)
        self.logger.creating.discard(self.trial_id)

    def _create(self) -> None:
        lg = self.logger
        if self.tried:
            found = lg.client.search_runs(
                [lg.tracking.experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = '{lg.parent_id}' "
                f"and tags.`{TRIAL_TAG}` = '{self.trial_id}'",
            )
            if found:
                lg.runs[self.trial_id] = found[0].info.run_id
                return
        self.tried = True
        run = lg.client.create_run(
            lg.tracking.experiment_id,
            run_name=f"{lg.job_id}-{self.trial_id}",
            tags={
                PARENT_TAG: lg.parent_id,
                JOB_TAG: lg.job_id,
                TRIAL_TAG: self.trial_id,
                **source_tags(),
            },
        )
        lg.runs[self.trial_id] = run.info.run_id
