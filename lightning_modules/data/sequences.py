"""The user's own sequences as a dataset: splits, fitted preprocessing, padded tensors + lengths.

Splits come from separate URLs, a split column, or seeded ratios (stratified for
classification). The test split is fixed by `split_seed` and never moves with the run's seed;
validation is carved from training data by the run's seed. Statistics, classes and targets are
fitted on the training split only and travel with the model (`extras["preprocessing"]`).
"""

from __future__ import annotations

import torch

from lightning_modules.data.assembly import SPLITS
from lightning_modules.data.base import SequenceData, Split, assemble
from lightning_modules.data.parquet_stream import build_stream
from lightning_modules.data.reading import (
    arrays,
    check_labels,
    check_missing,
    distinct,
    fit_preprocessing,
    load_splits,
)
from lightning_modules.data.sequence_files import RawSequences, list_files
from lightning_modules.data.splits import stratified_folds
from lightning_modules.datasets.sequences import SequencesData
from lightning_modules.preprocessing import Preprocessing


def to_split(raw: RawSequences, prep: Preprocessing, task: str, name: str) -> Split:
    x, lengths, y = arrays(raw, prep, task, name)
    return Split(torch.from_numpy(x), torch.as_tensor(y), torch.from_numpy(lengths))


def streams(cfg: SequencesData) -> bool:
    """Whether this dataset is read by row groups (`reader`, or `auto` and large Parquet)."""
    if cfg.reader != "auto":
        return cfg.reader == "stream"
    fs, files, fmt = list_files(cfg.url, cfg.format)
    return fmt == "parquet" and sum(fs.size(f) for f in files) > cfg.stream_above_mb * 1e6


def build(cfg: SequencesData, seed: int) -> SequenceData:
    if streams(cfg):
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
    parts = tuple(tensors[s] for s in SPLITS)
    return assemble(cfg, prep, parts, seq_len, splits["train"].y, folds)
