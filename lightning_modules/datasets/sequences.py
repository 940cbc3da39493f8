"""The user's own sequences (Parquet, CSV or NPZ at any fsspec URL): classification or regression."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class Folds(Section):
    """Stratified k-fold cross-validation: k models train in lockstep, each on k-1 folds."""

    folds: int = Field(5, ge=2, le=20)


class Holdout(Section):
    """One held-out validation split of the training data."""

    holdout: float | None = Field(None, gt=0, lt=1)
    """The held-out fraction (None: `val_fraction`)."""


Validation = Literal["auto", "none"] | Folds | Holdout
"""`none`: every training sequence trains the model and nothing is held out; a refit of settings
a cross-validated search chose, for the epoch count it chose."""


class SequencesData(Section):
    """The user's own sequences: Parquet, CSV (long format) or NumPy .npz at any fsspec URL.

    Parquet: one row per sequence, the sequence in `sequence_column` (list<float> for one
    feature, list<list<float>> of T steps x F features) or one list column per feature
    (`feature_columns`). CSV: one row per time step, grouped by `id_column`, ordered by
    `time_column` (else file order), features in `feature_columns` (default: every other
    numeric column). NPZ: `x` padded (N, T, F) with `lengths`, or an object array of (T_i, F)
    arrays, and `y`. The label (or regression target) is `label_column` in every layout.
    """

    name: Literal["sequences"] = "sequences"
    url: str = Field(min_length=1)
    """A file, a folder of files or a glob (a partitioned Parquet dataset is one dataset)."""
    val_url: str | None = None
    """Separate validation data (same layout); default: carved from `url` by the run's seed."""
    test_url: str | None = None
    """Separate test data; default: a fixed `test_fraction` of `url` (seeded by `split_seed`)."""
    format: Literal["auto", "parquet", "csv", "npz"] = "auto"
    """auto: from the file extension (.parquet/.pq, .csv, .npz)."""
    task: Literal["classification", "regression"] = "classification"
    sequence_column: str = "sequence"
    feature_columns: list[str] | None = None
    label_column: str | list[str] = "label"
    """Class label (strings or integers) or regression target: one column (a number or a list of
    numbers) or several numeric columns (a vector target)."""
    id_column: str = "sequence_id"
    """CSV: which sequence each row (time step) belongs to."""
    time_column: str | None = None
    """CSV: order of the steps within a sequence (default: their order in the file)."""
    split_column: str | None = None
    """A column saying train / val (or validation) / test per sequence, instead of ratios."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    validation: Validation = "auto"
    """How a trial is scored: `{folds: 5}` (stratified k-fold cross-validation; the k fold
    models are the final model, their probabilities averaged), `{holdout: 0.1}` (one held-out
    split), or `auto`: folds when a holdout would be too small to select on (under
    `lightning_modules.data.splits.MIN_HOLDOUT` sequences or `MIN_PER_CLASS` of a class), else
    a holdout of `val_fraction`. `val_url` and `split_column` fix the validation split."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    """Seed of the test split: the test set never moves with the run's seed."""
    max_len: int | None = Field(None, ge=1)
    """Cap on steps per sequence; longer ones keep their first or last `max_len` steps."""
    keep: Literal["first", "last"] = "last"
    standardize: bool = True
    """Per-feature mean/std fitted on the training split (and applied again when serving)."""
    standardize_target: bool = True
    """Regression: train on standardized targets (the loss is then in units of the target's
    std: 1.0 = predicting the mean); predictions are returned in the original units."""
    missing: Literal["refuse", "mean", "ffill"] = "refuse"
    """Missing (NaN) feature values: refuse with their count and place, fill with the training
    mean, or carry the last valid step forward (the training mean before the first)."""
    allow_pickle: bool = False
    """NPZ: allow an object array of (T_i, F) arrays (a pickle: loading it runs the file's code,
    so only for files you trust); otherwise store ragged data padded with `lengths`."""
    reader: Literal["auto", "memory", "stream"] = "auto"
    """Parquet only: `stream` reads row groups in DataLoader workers (larger-than-memory data);
    `memory` loads every split; `auto` streams training data above `stream_above_mb`."""
    stream_above_mb: float = Field(1024.0, gt=0)
    limit: int | None = Field(None, gt=0)
    """Use only `limit` training sequences, a seeded sample (smoke tests)."""

    @model_validator(mode="after")
    def _check(self) -> SequencesData:
        if self.split_column and (self.val_url or self.test_url):
            raise ValueError("split_column: give a split column or val_url/test_url, not both")
        if isinstance(self.validation, Folds) and (self.val_url or self.split_column):
            raise ValueError(
                "validation: folds split the training data themselves; give folds or a fixed "
                "validation split (val_url, split_column), not both"
            )
        labels = [self.label_column] if isinstance(self.label_column, str) else self.label_column
        if not labels:
            raise ValueError("label_column: name at least one column")
        if self.task == "classification" and len(labels) != 1:
            raise ValueError("label_column: classification takes one label column")
        return self

    @property
    def label_columns(self) -> list[str]:
        return [self.label_column] if isinstance(self.label_column, str) else self.label_column


DATASET = Dataset(
    config=SequencesData,
    task=None,  # `SequencesData.task`
    builder="lightning_modules.data.sequences:build",
    inputs=lambda cfg: 1,  # unknown until the files are read: the ceiling is then a lower bound
    outputs=lambda cfg: 1,
    search_space={  # what usually works on real sequence classification and regression
        "cell_type": {"choice": ["gru", "lstm"]},
        "num_layers": {"choice": [1, 2]},
        "hidden_size": {"choice": [32, 64, 128]},
        "bidirectional": {"choice": [False, True]},
        "lr": {"loguniform": [1e-3, 1e-2]},
        "grad_clip": {"loguniform": [0.5, 5.0]},
    },
    varying_length=True,
    steps=lambda cfg: ("data.max_len", cfg.max_len) if cfg.max_len is not None else None,
    digest_ignores=frozenset({"reader", "stream_above_mb", "limit"}),
)
