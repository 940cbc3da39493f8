"""MLflow tracking of a job's trials: one child run per trial, logged from the driver.

Only the driver talks to MLflow (a Tune callback), so trials need no MLflow access and an
embedded SQLite store sees one writer. The callback's writes go through an `OrderedWriter`: one
background thread that sends them in order and holds them through an MLflow outage, so Tune's
event loop never waits for MLflow. Metrics are batched: each write costs the driver ~9 ms of CPU
whatever its size (taken from the trials on the same cores), so a trial's first epoch is sent at
once, later ones at most every `FLUSH_EVERY_S`, and the rest (its last epoch always) with its end
tags, in one write. Epochs longer than that
(most real ones) are each sent as they come; a driver killed outright can lose the last
`FLUSH_EVERY_S` of metric points of a trial with shorter ones, and whatever an MLflow outage
still held back.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import DatasetInput, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune

from lightning_modules.metrics import REPORTED, reported
from tune import compat
from tune import outcome as O
from tune.outcome import JOB_TAG, PARENT_TAG, TRIAL_TAG
from tune.parent_run import TrialRuns, source_tags
from tune.spec import JobSpec
from tune.tracking import Tracking
from tune.trials import DIVERGED, DIVERGED_REASON, NON_FINITE
from tune.writer import OrderedWriter, WaitsForParked, parks

FLUSH_EVERY_S = 2.0  # how far a running trial's metrics in MLflow may lag behind it
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
BEST_EPOCH = "best_epoch"  # the epoch of a trial's best value of the job's metric


def best_name(metric: str) -> str:
    """`val_acc` -> `best_val_acc`: a trial's best epoch's value (its latest value is the best
    so far)."""
    return f"best_{metric}"


def improves(value: float, best: tuple[float, int] | None, mode: str) -> bool:
    if not math.isfinite(value):
        return False
    return best is None or (value > best[0] if mode == "max" else value < best[0])


def trial_params(spec: JobSpec, config: dict[str, Any]) -> dict[str, str]:
    """A trial's hyperparameters, flat, with the same name in every child run: those that take
    effect for its model and optimiser (`TrainSpec.applied_settings`), seed, epochs, data."""
    trial = spec.trial_spec(config)
    flat = trial.applied_settings()
    flat.update(
        seed=trial.trainer.seed, max_epochs=trial.trainer.max_epochs, dataset=trial.data.name
    )
    return {k: str(v) for k, v in flat.items()}


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

    def close(self) -> None:
        """The job is over: the writer's thread ends once its queue is empty."""
        if self._writer is not None:
            self._writer.close()

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
        if step >= self.spec.max_epochs:  # the trial ends now: sent with its end (`_finish`)
            if last is None:
                self.flushed_at[trial_id] = time.monotonic()  # or by `on_step_end`, if late
            return
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

    def _send_metrics(
        self, run_id: str, metrics: list[Metric], tags: list[RunTag] | None = None
    ) -> None:
        """Epochs past the last one logged to the run (epochs trained again are left out), and
        `tags` with the last batch."""
        through = self.logged_through.get(run_id, 0)
        new = [m for m in metrics if m.step > through]
        size = MAX_METRICS_PER_BATCH
        *full, last = [new[i : i + size] for i in range(0, len(new), size)] or [[]]
        for batch in full:
            self.client.log_batch(run_id, metrics=batch)
        if last or tags:
            self.client.log_batch(run_id, metrics=last, tags=tags or [])
        self.logged_through[run_id] = max([through, *(m.step for m in new)])

    def _finish(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        """The trial's last metrics and its end tags in one write, then its status."""
        if trial_id not in self.trials:
            return
        metrics = self.buffered.pop(trial_id, [])
        self.flushed_at[trial_id] = time.monotonic()
        batch = [RunTag(k, v) for k, v in tags.items()]
        if metrics or batch:
            self._write(trial_id, lambda run_id: self._send_metrics(run_id, metrics, batch))
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
