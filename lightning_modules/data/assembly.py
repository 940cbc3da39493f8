"""What both readers of the user's sequences (in memory, `sequences.py`; streamed from Parquet,
`parquet_stream.py`) do alike once rows are read: the checks that fail bad data by name,
padding a batch and encoding its labels or targets (`data.base.assemble` makes the
`SequenceData`). No torch here: a job's data check (`reading.preflight`) runs before torch is
imported. Both readers import this module and neither imports the other's internals.
"""

from __future__ import annotations

import numpy as np

from lightning_modules.data.sequence_files import DataFileError
from lightning_modules.datasets.sequences import SequencesData
from lightning_modules.preprocessing import Preprocessing

SPLITS = ("train", "val", "test")


class MissingValues:
    """Counts NaN feature values over a pass (`missing: refuse`) and fails with the count and
    the first place: `add` each (truncated) sequence, then `check`."""

    def __init__(self, cfg: SequencesData, feature_names: list[str]) -> None:
        self.active = cfg.missing == "refuse"
        self.feature_names = feature_names
        self.total, self.first = 0, None

    def add(self, x: np.ndarray, where: str) -> None:
        if not self.active:
            return
        nan = np.isnan(x)
        if nan.any():
            self.total += int(nan.sum())
            if self.first is None:
                step, feat = np.argwhere(nan)[0]
                self.first = f"{where} step {step} feature {self.feature_names[feat]!r}"

    def check(self) -> None:
        if self.total:
            raise DataFileError(
                f"data.missing: {self.total} missing (NaN) feature values (first: {self.first}); "
                "clean them or set data.missing to mean or ffill"
            )


def check_known(labels, prep: Preprocessing, split: str) -> None:
    """Classification: a label of `split` that training never saw fails by name."""
    known = set(prep.classes or [])
    unseen = [v for v in labels if v not in known]
    if unseen:
        raise DataFileError(
            f"data.label_column: label {unseen[0]!r} in the {split} split is not among the "
            f"training split's classes {prep.classes[:10]}"
        )


def pad(xs: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed sequences as one (N, T_max, F) array, zero past each length (packed in the
    model, never read), and the lengths (N,)."""
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    batch = np.zeros((len(xs), int(lengths.max(initial=1)), width), dtype=np.float32)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x
    return batch, lengths


def encode(prep: Preprocessing, task: str, ys) -> np.ndarray:
    """Labels as class indices, or targets scaled as in training."""
    if task == "classification":
        return prep.encode_labels(ys)
    ys = np.asarray(ys, dtype=np.float32)
    return prep.scale_targets(ys.reshape(len(ys), -1))
