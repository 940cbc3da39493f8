"""What the driver and the trials share without the training stack: the keys a trial reports,
its checkpoint's file name, and the trial functions Tune runs, by reference.

The trial functions' bodies (`tune.trainable`: torch, Lightning) are imported on the trial's
worker when it starts. So the driver imports no torch before its search, and a job's start does
not wait ~4 s for imports only its registration needs (bench/fixed_cost.py).
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_FILE = "model.ckpt"
DIVERGED = "diverged"  # reported as 1.0 in the result of a trial that diverged
DIVERGED_REASON = "diverged_reason"  # with it, why (a string; not logged as a metric)
NON_FINITE = "non_finite"  # comma-separated metrics that were NaN/inf: left out of MLflow
NODE_ID = "node_id"  # the Ray node the epoch ran on (a string; not logged to MLflow)
WORLD_SIZE = "world_size"  # DDP processes that trained the epoch (multi-worker trials only)
TRAIN_PLACEMENT_GROUP = "train_placement_group"  # the workers' placement group (hex id), ditto
TRAIN_RUN_PREFIX = "ddp-"  # a multi-worker trial's Train runs: folders in its trial folder
SETUP_S = "time_setup_s"  # the trial function's start to its first training step: spec, data,
# model, Trainer (a number in every result; not an MLflow metric)


def run_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune function trainable for one process per trial (`tune.trainable.run_trial`)."""
    from tune import trainable

    trainable.run_trial(config, job)


def run_ddp_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Tune function trainable for `resources.workers > 1` (`tune.trainable.run_ddp_trial`)."""
    from tune import trainable

    trainable.run_ddp_trial(config, job)
