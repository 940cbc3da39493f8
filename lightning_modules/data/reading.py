"""Reading the user's sequences as a job will, without torch: the splits, the fitted
preprocessing, and the checks that fail bad data by name. `preflight` runs them before a job
starts anything (and before its process imports torch); `sequences.build` makes the tensors.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lightning_modules.data.assembly import SPLITS, MissingValues, check_known, encode, pad
from lightning_modules.data.sequence_files import DataFileError, RawSequences, read
from lightning_modules.data.splits import CODES, ValidationPlan, assign_rows
from lightning_modules.datasets.sequences import SequencesData
from lightning_modules.preprocessing import Moments, Preprocessing, from_moments


def load_splits(
    cfg: SequencesData, seed: int, max_rows: int | None = None
) -> tuple[dict[str, RawSequences], ValidationPlan]:
    """Raw train/val/test sequences, as the spec's split options say (`max_rows`: a sample),
    and how trials are scored on them: under cross-validation `val` is `train` itself."""
    data = read(cfg.url, cfg, max_rows)
    test = read(cfg.test_url, cfg, max_rows) if cfg.test_url and not cfg.split_column else None
    val = read(cfg.val_url, cfg, max_rows) if cfg.val_url and not cfg.split_column else None
    codes, plan = assign_rows(
        cfg,
        seed,
        data.y,
        data.split if cfg.split_column else None,
        len(val) if val is not None else None,
        complete=max_rows is None,
    )
    out = {s: data.take(np.flatnonzero(codes == CODES[s])) for s in SPLITS}
    if test is not None:
        out["test"] = test
    if val is not None:
        out["val"] = val
    if plan.kind in ("folds", "none"):
        # folds: every sequence is scored once, by the model of its fold; none: the
        # validation metrics are the training data's (a refit selects nothing)
        out["val"] = out["train"]
    for s in SPLITS:
        if out[s].feature_names != out["train"].feature_names:
            raise DataFileError(
                f"data: the {s} split has features {out[s].feature_names}, "
                f"training has {out['train'].feature_names}"
            )
    return out, plan


def distinct(splits: dict[str, RawSequences]) -> list[str]:
    """The splits holding their own sequences: under folds or a refit `val` is `train` itself."""
    return [s for s in SPLITS if s != "val" or splits["val"] is not splits["train"]]


def fit_preprocessing(cfg: SequencesData, train: RawSequences) -> Preprocessing:
    """Statistics of the training split's (truncated) steps, its classes or targets."""
    probe = Preprocessing(train.feature_names, [], [], [], max_len=cfg.max_len, keep=cfg.keep)
    moments = Moments(len(train.feature_names))
    for steps in train.x:
        moments.add(probe.truncate(steps))
    return from_moments(moments, train.y, train.feature_names, cfg)


def check_labels(cfg: SequencesData, splits: dict[str, RawSequences]) -> None:
    """Missing labels, non-finite targets and classes unseen in training fail by name."""
    for s, raw in splits.items():
        y = raw.y
        if cfg.task == "regression":
            bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
        else:
            bad = np.flatnonzero([v is None or (isinstance(v, float) and np.isnan(v)) for v in y])
        if len(bad):
            raise DataFileError(
                f"data.label_column: {len(bad)} missing or non-finite labels in the {s} split "
                f"(first: {raw.where[bad[0]]})"
            )


def check_missing(cfg: SequencesData, splits: dict[str, RawSequences], prep: Preprocessing):
    """With `missing: refuse`, NaN feature values fail with their count and first place."""
    missing = MissingValues(cfg, prep.feature_names)
    for s in distinct(splits):
        for i, x in enumerate(splits[s].x):
            missing.add(prep.truncate(x), splits[s].where[i])
    missing.check()


def preflight(cfg: SequencesData, large: bool, sample: int = 2000) -> ValidationPlan:
    """Read the data (a sample of a `large` one) as a trial would, so a job with unusable data
    fails in one line before any trial starts; how its trials will be scored."""
    splits, plan = load_splits(cfg, seed=0, max_rows=sample if large else None)
    check_labels(cfg, splits)
    prep = fit_preprocessing(cfg, splits["train"])
    check_missing(cfg, splits, prep)
    if not large:  # a sample's splits may miss classes that the whole data has
        for s in distinct(splits):
            arrays(splits[s], prep, cfg.task, s)
    median = float(np.median([len(prep.truncate(x)) for x in splits["train"].x]))
    return replace(plan, median_steps=median)


def arrays(raw: RawSequences, prep: Preprocessing, task: str, name: str):
    """A split as the network reads it, as numpy: padded (N, T_max, F) steps, lengths, and
    labels encoded (a label training never saw fails by name) or targets scaled."""
    x, lengths = pad([prep.apply(x) for x in raw.x], prep.input_size)
    if lengths.min(initial=1) == 0:
        i = int(np.argmin(lengths))
        raise DataFileError(f"data: empty sequence in the {name} split ({raw.where[i]})")
    if task == "classification":
        check_known(raw.y, prep, name)
    return x, lengths, encode(prep, task, raw.y)
