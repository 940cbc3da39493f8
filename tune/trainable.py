"""The per-trial function Ray Tune runs: sampled config -> TrainSpec -> Lightning run, reported each epoch.

Every epoch the trial reports our metric names and a checkpoint, so ASHA/HyperBand/median can
stop it and PBT can exploit it; a restarted trial (retry, PBT exploit, resumed job) continues
from `ray.tune.get_checkpoint()`.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import ray
import torch
from ray import tune as ray_tune

from lightning_modules import metrics as M
from lightning_modules.training import train
from tune.spec import JobSpec

REPORTED = (
    M.TRAIN_LOSS,
    M.VAL_LOSS,
    M.VAL_ACC,
    M.VAL_BPC,
    M.GRAD_NORM,
    M.CLIP_FRAC,
    M.EPOCH_TIME_S,
    M.LR,
)
CHECKPOINT_FILE = "model.ckpt"
DIVERGED = "diverged"  # reported as 1.0 in the result of a trial whose loss became NaN/inf
NODE_ID = "node_id"  # the Ray node the epoch ran on (a string; not logged to MLflow)


class TuneReporter(pl.Callback):
    """Reports each epoch's metrics with a checkpoint to Tune (after validation)."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric = metric
        self.worst = 0.0 if mode == "max" else 1e9  # what a diverged trial reports, never NaN

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        metrics: dict[str, float] = {k: float(logged[k]) for k in REPORTED if k in logged}
        metrics["epoch"] = trainer.current_epoch + 1
        metrics[DIVERGED] = float(getattr(module, "diverged", False))
        if metrics[DIVERGED] or not math.isfinite(metrics.get(self.metric, math.nan)):
            metrics = {k: (v if math.isfinite(v) else self.worst) for k, v in metrics.items()}
            metrics.setdefault(self.metric, self.worst)
        result = {**metrics, NODE_ID: ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory() as tmp:
            trainer.save_checkpoint(os.path.join(tmp, CHECKPOINT_FILE))
            ray_tune.report(result, checkpoint=ray_tune.Checkpoint.from_directory(tmp))


class _ApplyConfigLr(pl.Callback):
    """After restoring a checkpoint, use the trial's (possibly PBT-mutated) learning rate."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = self.lr


def run_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune function trainable. `job` is the JobSpec as JSON-able data (via `with_parameters`)."""
    spec = JobSpec.model_validate(job)
    trial = spec.trial_spec(config)  # typed from here on
    cpus = max(1, int(spec.resources.cpus))
    torch.set_num_threads(cpus)
    trial = trial.with_params({"threads": cpus})
    if spec.resources.gpus > 0:
        trial = trial.with_params({"accelerator": "gpu"})
    metric, mode = spec.monitor
    callbacks: list[pl.Callback] = [TuneReporter(metric, mode)]
    ckpt_path = None
    checkpoint = ray_tune.get_checkpoint()
    if checkpoint is not None:
        local = checkpoint.to_directory()
        ckpt_path = str(Path(local) / CHECKPOINT_FILE)
        callbacks.append(_ApplyConfigLr(trial.optim.lr))
    out = Path(ray_tune.get_context().get_trial_dir()) / "lightning"
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
