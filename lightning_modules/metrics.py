"""Metric names shared by training, Tune schedulers, MLflow and the registry."""

from __future__ import annotations

from typing import Literal

TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACC = "val_acc"
VAL_BPC = "val_bpc"
GRAD_NORM = "grad_norm"  # mean pre-clip global gradient norm over the epoch's steps
CLIP_FRAC = "clip_frac"  # fraction of the epoch's steps whose gradients were clipped
EPOCH_TIME_S = "epoch_time_s"  # wall time of the epoch: training steps plus validation
LR = "lr"

Mode = Literal["min", "max"]

# The metric each task is judged by, and which way is better.
DEFAULT_MONITOR: dict[str, tuple[str, Mode]] = {
    "classification": (VAL_ACC, "max"),
    "regression": (VAL_LOSS, "min"),
    "language_model": (VAL_BPC, "min"),
}


def better_mode(metric: str) -> Mode:
    """Which way `metric` improves: accuracies up, losses and bits per character down."""
    return "max" if metric.endswith("_acc") else "min"


def test_name(val_metric: str) -> str:
    """`val_acc` -> `test_acc`: the same quantity on the test split."""
    return "test_" + val_metric.removeprefix("val_")
