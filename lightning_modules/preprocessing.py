"""Preprocessing fitted on a training split, applied the same way in training and in serving.

NumPy only (no torch, no Lightning): the MLflow pyfunc applies it to raw requests, so every
server takes the user's raw sequences and answers in the user's own label names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lightning_modules.datasets.sequences import SequencesData

MIN_STD = 1e-8  # a constant feature is centred, not scaled


@dataclass
class Preprocessing:
    feature_names: list[str]
    mean: list[float]  # per feature, over every valid training step (0 when not standardizing)
    std: list[float]  # per feature (1 when not standardizing)
    fill: list[float]  # per feature: the raw training mean, what `missing: mean|ffill` fill in
    classes: list[Any] | None = None  # classification: index -> the user's label
    target_mean: list[float] | None = None  # regression with standardized targets
    target_std: list[float] | None = None
    max_len: int | None = None
    keep: str = "last"
    missing: str = "refuse"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "sequences", **asdict(self)}

    @property
    def input_size(self) -> int:
        return len(self.feature_names)

    def truncate(self, x: np.ndarray) -> np.ndarray:
        if self.max_len is None or len(x) <= self.max_len:
            return x
        return x[: self.max_len] if self.keep == "first" else x[-self.max_len :]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """One raw sequence (T, F) -> the network's input: truncated, filled, standardized."""
        x = self.truncate(np.asarray(x, dtype=np.float32))
        if self.missing != "refuse":
            x = fill_missing(x, np.asarray(self.fill, np.float32), forward=self.missing == "ffill")
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def encode_labels(self, y: np.ndarray) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes or [])}
        return np.array([index[_plain(v)] for v in y], dtype=np.int64)

    def scale_targets(self, y: np.ndarray) -> np.ndarray:
        if self.target_mean is None:
            return y.astype(np.float32)
        return ((y - np.asarray(self.target_mean)) / np.asarray(self.target_std)).astype(np.float32)

    def unscale_targets(self, y: np.ndarray) -> np.ndarray:
        if self.target_mean is None:
            return y
        return y * np.asarray(self.target_std, y.dtype) + np.asarray(self.target_mean, y.dtype)


def fill_missing(x: np.ndarray, fill: np.ndarray, forward: bool) -> np.ndarray:
    """NaNs -> the previous valid step's value (forward) or `fill` (the training mean)."""
    nan = np.isnan(x)
    if not nan.any():
        return x
    x = x.copy()
    if forward:
        idx = np.where(~nan, np.arange(len(x))[:, None], 0)
        np.maximum.accumulate(idx, axis=0, out=idx)
        carried = x[idx, np.arange(x.shape[1])]
        x = np.where(nan, carried, x)
        nan = np.isnan(x)  # steps before the first valid one
    return np.where(nan, fill, x)


def _plain(v: Any) -> Any:
    """NumPy scalars -> Python ones (JSON-able, and equal-hashing with what serving sees)."""
    return v.item() if isinstance(v, np.generic) else v


class Moments:
    """Per-feature count, sum and sum of squares over steps, NaN-aware (streamed statistics)."""

    def __init__(self, features: int) -> None:
        self.n = np.zeros(features)
        self.total = np.zeros(features)
        self.total_sq = np.zeros(features)

    def add(self, steps: np.ndarray) -> None:
        steps = steps.astype(np.float64)
        valid = ~np.isnan(steps)
        self.n += valid.sum(axis=0)
        self.total += np.where(valid, steps, 0).sum(axis=0)
        self.total_sq += np.where(valid, steps * steps, 0).sum(axis=0)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        n = np.maximum(self.n, 1)
        mean = self.total / n
        std = np.sqrt(np.maximum(self.total_sq / n - mean * mean, 0))
        return mean, np.where(std < MIN_STD, 1.0, std)


def from_moments(
    moments: Moments, y: np.ndarray, feature_names: list[str], cfg: SequencesData
) -> Preprocessing:
    """A Preprocessing from training-split feature moments and training labels or targets."""
    mean, std = moments.mean_std()
    prep = Preprocessing(
        feature_names=list(feature_names),
        mean=mean.tolist() if cfg.standardize else [0.0] * len(mean),
        std=std.tolist() if cfg.standardize else [1.0] * len(std),
        fill=mean.tolist(),
        max_len=cfg.max_len,
        keep=cfg.keep,
        missing=cfg.missing,
    )
    if cfg.task == "classification":
        prep.classes = sorted({_plain(v) for v in y}, key=lambda v: (str(type(v)), v))
    elif cfg.standardize_target:
        t = y.astype(np.float64)
        prep.target_mean = t.mean(axis=0).tolist()
        prep.target_std = np.where(t.std(axis=0) < MIN_STD, 1.0, t.std(axis=0)).tolist()
    return prep
