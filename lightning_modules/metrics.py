"""Metric names shared by training, Tune schedulers, MLflow and the registry."""

from __future__ import annotations

import re
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


# Cross-validated trials: each validation metric is the mean over the fold models, with its
# standard deviation and each fold's value beside it (`val_acc_sd`, `val_acc_fold0`, ...).
_FOLD_METRIC = re.compile(r"val_[a-z]+_(sd|fold\d+)")


def fold_metrics(name: str, values: list[float]) -> dict[str, float]:
    """`name` (the mean over folds), `name_sd` (population sd) and `name_fold<i>` per fold."""
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
    return {name: mean, f"{name}_sd": sd, **{f"{name}_fold{i}": v for i, v in enumerate(values)}}


def is_fold_metric(key: str) -> bool:
    return _FOLD_METRIC.fullmatch(key) is not None


def reported(keys) -> list[str]:
    """The keys of `keys` a trial reports each epoch: `REPORTED`'s, then its fold metrics."""
    keys = list(keys)
    return [k for k in REPORTED if k in keys] + sorted(k for k in keys if is_fold_metric(k))


REPORTED = (TRAIN_LOSS, VAL_LOSS, VAL_ACC, VAL_BPC, GRAD_NORM, CLIP_FRAC, EPOCH_TIME_S, LR)
"""What a trial reports to Tune and its child run each epoch (besides fold metrics)."""
