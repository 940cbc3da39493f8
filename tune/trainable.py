"""The per-trial function Ray Tune runs: sampled config -> TrainSpec -> Lightning run, reported each epoch.

Every epoch the trial reports our metric names and a checkpoint, so ASHA/HyperBand/median can
stop it and PBT can exploit it; a restarted trial (retry, PBT exploit, resumed job) continues
from `ray.tune.get_checkpoint()`.

With `resources.workers > 1` the trial function (`run_ddp_trial`) drives a Ray Train run instead:
`workers` DDP processes train the same way, report every epoch to Train, and the trial function
re-reports each report to Tune, whose checkpoints and schedulers then work as for one worker.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import ray
import torch
from ray import tune as ray_tune
from ray.train.v2.api.callback import UserCallback

from lightning_modules import metrics as M
from lightning_modules.config import TrainSpec
from lightning_modules.training import train
from tune.spec import JobSpec
from tune.trials import (
    CHECKPOINT_FILE,
    DIVERGED,
    DIVERGED_REASON,
    NODE_ID,
    NON_FINITE,
    SETUP_S,
    TRAIN_PLACEMENT_GROUP,
    TRAIN_RUN_PREFIX,
    WORLD_SIZE,
)


class TuneReporter(pl.Callback):
    """Reports each epoch's metrics with a checkpoint to Tune (after validation)."""

    def __init__(self, metric: str, mode: str, entered: float | None = None) -> None:
        self.metric = metric
        # The job's metric must be a number for the scheduler: a NaN one is reported as the
        # worst value, and named in NON_FINITE so MLflow never records it as a measurement.
        self.worst = 0.0 if mode == "max" else 1e9
        self.entered = entered or time.perf_counter()
        self.setup_s = 0.0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.setup_s = time.perf_counter() - self.entered

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        values = {k: float(logged[k]) for k in M.reported(logged)}
        metrics = {k: v for k, v in values.items() if math.isfinite(v)}
        non_finite = sorted(set(values) - set(metrics))
        if self.metric not in metrics:
            metrics[self.metric] = self.worst
            non_finite = sorted({*non_finite, self.metric})
        result: dict[str, Any] = {
            **metrics,
            "epoch": trainer.current_epoch + 1,
            DIVERGED: float(module.diverged),
            DIVERGED_REASON: module.diverged_reason,
            NON_FINITE: ",".join(non_finite),
            NODE_ID: ray.get_runtime_context().get_node_id(),
            SETUP_S: self.setup_s,
        }
        self.report(trainer, result)

    def report(self, trainer: pl.Trainer, result: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_FILE))
            ray_tune.report(result, checkpoint=ray_tune.Checkpoint.from_directory(tmp))


class TrainWorkerReporter(TuneReporter):
    """The same report from a DDP rank, to Ray Train: every rank reports, rank 0 the checkpoint."""

    def report(self, trainer: pl.Trainer, result: dict[str, Any]) -> None:
        group = ray.util.get_current_placement_group()
        result = {
            **result,
            WORLD_SIZE: trainer.world_size,
            TRAIN_PLACEMENT_GROUP: group.id.hex() if group is not None else "",
        }
        with tempfile.TemporaryDirectory() as tmp:
            # Every rank calls it (it ends in a barrier); only rank 0 writes the file.
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_FILE))
            ckpt = ray.train.Checkpoint.from_directory(tmp) if trainer.is_global_zero else None
            # A barrier too: Ray Train needs every rank to report every epoch.
            ray.train.report(result, checkpoint=ckpt)


class _ApplyConfigLr(pl.Callback):
    """After restoring a checkpoint, use the trial's (possibly PBT-mutated) learning rate."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = self.lr


def _trial_train_spec(spec: JobSpec, config: dict[str, Any]) -> TrainSpec:
    """The trial's TrainSpec on this process: `resources.cpus` torch threads, the GPU if any."""
    trial = spec.trial_spec(config)
    cpus = max(1, int(spec.resources.cpus))
    torch.set_num_threads(cpus)
    trial = trial.with_params({"threads": cpus})
    if spec.resources.gpus > 0:
        trial = trial.with_params({"accelerator": "gpu"})
    return trial


def run_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune function trainable. `job` is the JobSpec as JSON-able data (via `with_parameters`)."""
    entered = time.perf_counter()
    spec = JobSpec.model_validate(job)
    trial = _trial_train_spec(spec, config)  # typed from here on
    metric, mode = spec.monitor
    callbacks: list[pl.Callback] = [TuneReporter(metric, mode, entered)]
    out = Path(ray_tune.get_context().get_trial_dir()) / "lightning"
    # A restored checkpoint (resume, PBT's exploit) is copied into a folder of our own that goes
    # when the trial ends: Ray's default target is a new /tmp folder that nobody removes.
    with tempfile.TemporaryDirectory(prefix="rnntune-restore-") as tmp:
        ckpt_path = None
        checkpoint = ray_tune.get_checkpoint()
        if checkpoint is not None:
            ckpt_path = str(Path(checkpoint.to_directory(tmp)) / CHECKPOINT_FILE)
            callbacks.append(_ApplyConfigLr(trial.optim.lr))
        train(
            trial,
            out,
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            run_test=False,  # the driver tests the best trial once, after the search
            ckpt_path=ckpt_path,
            save_checkpoints=False,  # Tune keeps the checkpoints, on the job's storage
        )


def _ddp_worker(loop_config: dict[str, Any]) -> None:
    """One DDP rank (a Ray Train worker): `run_trial`'s training with Lightning's DDP for Ray."""
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer

    spec = JobSpec.model_validate(loop_config["job"])
    trial = _trial_train_spec(spec, loop_config["config"])
    metric, mode = spec.monitor
    callbacks: list[pl.Callback] = [TrainWorkerReporter(metric, mode)]
    resume: ray_tune.Checkpoint | None = loop_config["resume"]
    with tempfile.TemporaryDirectory(prefix="rnntune-ddp-") as tmp:
        ckpt_path = None
        if resume is not None:  # every rank loads it; DDP then starts from identical weights
            ckpt_path = str(
                Path(resume.to_directory(os.path.join(tmp, "resume"))) / CHECKPOINT_FILE
            )
            callbacks.append(_ApplyConfigLr(trial.optim.lr))
        train(
            trial,
            Path(tmp) / "lightning",
            callbacks=callbacks,
            logger=False,
            enable_progress_bar=False,
            run_test=False,
            ckpt_path=ckpt_path,
            save_checkpoints=False,
            # Validation shards may differ by a batch between ranks, so the DDP forward must not
            # broadcast buffers (a collective) on every call; our networks have none anyway.
            strategy=RayDDPStrategy(broadcast_buffers=False),
            plugins=[RayLightningEnvironment()],
            prepare=prepare_trainer,
        )


class _ForwardToTrial(UserCallback):
    """Runs in the Ray Train controller: hands each report to the trial function's relay.

    `ray.tune.integration.ray_train.TuneReportCallback` forwards only metrics (with the
    checkpoint's path as one), so Tune would keep no checkpoints: no best-checkpoint
    registration, no PBT exploit, no resume of the trial. This passes the checkpoint itself.
    """

    def __init__(self, queue) -> None:
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.queue.put((metrics[0], checkpoint))  # rank 0's metrics (all ranks' are global)


def _relay_to_tune(queue, fitted: threading.Event, errors: list[BaseException]) -> None:
    """Re-reports each Train report to Tune, which copies the checkpoint into the trial's own."""
    from ray.util.queue import Empty

    while True:
        try:
            metrics, checkpoint = queue.get(timeout=0.5)
        except Empty:
            if fitted.is_set():
                return
            continue
        if errors:  # keep draining, so the controller never blocks on a full queue
            continue
        try:
            if checkpoint is None:
                ray_tune.report(metrics)
                continue
            tune_ckpt = ray_tune.Checkpoint(checkpoint.path, checkpoint.filesystem)
            ray_tune.report(metrics, checkpoint=tune_ckpt)
            checkpoint.filesystem.delete_dir(checkpoint.path)  # Tune has its copy now
        except Exception as e:  # noqa: BLE001 - raised by the trial function after the run
            errors.append(e)


def run_ddp_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune function trainable for `resources.workers > 1`: one Ray Train run of DDP workers.

    The run's reports reach Tune through `_relay_to_tune` on a thread of this trial: when Tune
    stops the trial (ASHA, PBT exploit) that thread exits, this one stays in `fit()`, and Tune
    ends the trial's actor, which takes the Train controller and its workers with it (the
    driver's `ReleaseTrainRuns` then frees their placement group).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    spec = JobSpec.model_validate(job)
    res = spec.resources
    per_worker = {"CPU": res.cpus, **({"GPU": res.gpus} if res.gpus > 0 else {})}
    storage = ray_tune.get_context().get_storage()
    run_name = f"{TRAIN_RUN_PREFIX}{uuid.uuid4().hex[:8]}"  # a new run: Train won't resume one
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _ddp_worker,
        # Tune's checkpoint (retry, PBT exploit, resumed job) is where every rank starts from.
        train_loop_config={"job": job, "config": config, "resume": ray_tune.get_checkpoint()},
        scaling_config=ScalingConfig(
            num_workers=res.workers, use_gpu=res.gpus > 0, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            failure_config=FailureConfig(max_failures=0),  # Tune retries the trial instead
            callbacks=[_ForwardToTrial(queue)],
        ),
    )
    fitted, errors = threading.Event(), []
    relay = threading.Thread(target=_relay_to_tune, args=(queue, fitted, errors), daemon=True)
    relay.start()
    try:
        trainer.fit()
    finally:
        fitted.set()
    relay.join()
    queue.shutdown()
    if errors:
        raise errors[0]
    try:  # the run's checkpoints were moved to Tune; what is left is Train's bookkeeping
        storage.storage_filesystem.delete_dir(f"{storage.trial_fs_path}/{run_name}")
    except OSError:
        pass
