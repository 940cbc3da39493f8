"""The user's own sequences as a dataset: splits, fitted preprocessing, padded tensors + lengths.

Splits come from separate URLs, a split column, or seeded ratios (stratified for
classification). The test split is fixed by `split_seed` and never moves with the run's seed;
validation is carved from training data by the run's seed. Statistics, classes and targets are
fitted on the training split only and travel with the model (`extras["preprocessing"]`).
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_modules.config import SequencesData
from lightning_modules.data.base import SequenceData, Split
from lightning_modules.data.sequence_files import (
    SPLIT_NAMES,
    DataFileError,
    RawSequences,
    digest,
    list_files,
    read,
)
from lightning_modules.data.splits import (
    ValidationPlan,
    class_counts,
    holdout_fraction,
    plan_validation,
    ratio_split,
    stratified_folds,
)
from lightning_modules.preprocessing import Moments, Preprocessing, from_moments

SPLITS = ("train", "val", "test")


def load_splits(
    cfg: SequencesData, seed: int, max_rows: int | None = None
) -> tuple[dict[str, RawSequences], ValidationPlan]:
    """Raw train/val/test sequences, as the spec's split options say (`max_rows`: a sample),
    and how trials are scored on them: under cross-validation `val` is `train` itself."""
    data = read(cfg.url, cfg, max_rows)
    stratify = cfg.task == "classification"
    if cfg.split_column:
        names = np.array([SPLIT_NAMES.get(str(v).lower(), "") for v in data.split])
        unknown = sorted({str(v) for v, n in zip(data.split, names, strict=True) if not n})
        if unknown:
            raise DataFileError(
                f"data.split_column: values {unknown[:5]} are not train, val (validation) or test"
            )
        out = {s: data.take(np.flatnonzero(names == s)) for s in SPLITS}
        missing = [s for s in SPLITS if len(out[s]) == 0]
        if missing and max_rows is None:
            raise DataFileError(f"data.split_column: no {missing[0]} sequences in {cfg.url}")
        if cfg.limit is not None:
            out["train"] = _sample(out["train"], cfg.limit, seed)
        plan = ValidationPlan("fixed", len(out["val"]), train_size=len(out["train"]), asked=True)
    else:
        out = {}
        if cfg.test_url:
            out["test"] = read(cfg.test_url, cfg, max_rows)
        else:
            test, rest = ratio_split(data.y, cfg.test_fraction, cfg.split_seed, stratify)
            out["test"], data = data.take(test), data.take(rest)
        if cfg.limit is not None:
            data = _sample(data, cfg.limit, seed)
        out["val"] = read(cfg.val_url, cfg, max_rows) if cfg.val_url else None
        plan = plan_validation(
            cfg.validation,
            cfg.val_fraction,
            len(data),
            class_counts(data.y) if stratify else None,
            len(out["val"]) if out["val"] is not None else None,
        )
        if plan.kind == "holdout":
            val, rest = ratio_split(data.y, holdout_fraction(cfg), seed, stratify)
            out["val"], data = data.take(val), data.take(rest)
        out["train"] = data
        if plan.kind in ("folds", "none"):
            # folds: every sequence is scored once, by the model of its fold; none: the
            # validation metrics are the training data's (a refit selects nothing)
            out["val"] = data
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


def _sample(data: RawSequences, limit: int, seed: int) -> RawSequences:
    """A seeded sample, not the first rows: files are often sorted by label."""
    keep = np.random.default_rng(seed).permutation(len(data))[:limit]
    return data.take(np.sort(keep))


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
    if cfg.missing != "refuse":
        return
    total, first = 0, None
    for s in distinct(splits):
        for i, x in enumerate(splits[s].x):
            nan = np.isnan(prep.truncate(x))
            if nan.any():
                total += int(nan.sum())
                if first is None:
                    step, feat = np.argwhere(nan)[0]
                    first = f"{splits[s].where[i]} step {step} feature {prep.feature_names[feat]!r}"
    if total:
        raise DataFileError(
            f"data.missing: {total} missing (NaN) feature values (first: {first}); clean them or "
            "set data.missing to mean or ffill"
        )


def to_split(raw: RawSequences, prep: Preprocessing, task: str, name: str) -> Split:
    xs = [prep.apply(x) for x in raw.x]
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    if lengths.min(initial=1) == 0:
        i = int(np.argmin(lengths))
        raise DataFileError(f"data: empty sequence in the {name} split ({raw.where[i]})")
    batch = np.zeros((len(xs), int(lengths.max(initial=1)), prep.input_size), dtype=np.float32)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = x  # (N, T_max, F), zero past each length (packed in the model)
    if task == "classification":
        known = set(prep.classes)
        unseen = [v for v in raw.y if v not in known]
        if unseen:
            raise DataFileError(
                f"data.label_column: label {unseen[0]!r} in the {name} split is not among the "
                f"training split's classes {prep.classes[:10]}"
            )
        y = torch.as_tensor(prep.encode_labels(raw.y))
    else:
        y = torch.as_tensor(prep.scale_targets(raw.y))
    return Split(torch.from_numpy(batch), y, torch.from_numpy(lengths))


def streams(cfg: SequencesData) -> bool:
    """Whether this dataset is read by row groups (`reader`, or `auto` and large Parquet)."""
    if cfg.reader != "auto":
        return cfg.reader == "stream"
    fs, files, fmt = list_files(cfg.url, cfg.format)
    return fmt == "parquet" and sum(fs.size(f) for f in files) > cfg.stream_above_mb * 1e6


def build(cfg: SequencesData, seed: int) -> SequenceData:
    if streams(cfg):
        from lightning_modules.data.parquet_stream import build_stream

        return build_stream(cfg, seed)
    splits, plan = load_splits(cfg, seed)
    check_labels(cfg, splits)
    prep = fit_preprocessing(cfg, splits["train"])
    check_missing(cfg, splits, prep)
    tensors = {s: to_split(splits[s], prep, cfg.task, s) for s in distinct(splits)}
    tensors.setdefault("val", tensors["train"])  # folds, or a refit: validation is no split
    folds = None
    if plan.kind == "folds":
        folds = stratified_folds(splits["train"].y, plan.folds, seed, cfg.task == "classification")
    seq_len = max(int(t.lengths.max()) for t in tensors.values())
    out = len(prep.classes) if cfg.task == "classification" else tensors["train"].y.shape[1]
    return SequenceData(
        train=tensors["train"],
        val=tensors["val"],
        test=tensors["test"],
        input_size=prep.input_size,
        out_features=out,
        seq_len=seq_len,
        extras={"preprocessing": prep.to_dict()},
        digest=digest(cfg),
        folds=folds,
    )


def preflight(cfg: SequencesData, large: bool, sample: int = 2000) -> ValidationPlan:
    """Read the data (a sample of a `large` one) as a trial would, so a job with unusable data
    fails in one line before any trial starts; how its trials will be scored."""
    splits, plan = load_splits(cfg, seed=0, max_rows=sample if large else None)
    check_labels(cfg, splits)
    prep = fit_preprocessing(cfg, splits["train"])
    check_missing(cfg, splits, prep)
    if not large:  # a sample's splits may miss classes that the whole data has
        for s in distinct(splits):
            to_split(splits[s], prep, cfg.task, s)
    return plan
