"""How a dataset's rows are split: seeded ratio splits (test, holdout), stratified k folds, and
the rule that scores trials by folds or by a holdout, from the size of the training data.

Every reader (in-memory user data, streamed Parquet, the built-in datasets) splits through this
module, so the rules are written once.

Why the thresholds: a trial is selected on its validation accuracy, whose standard error on n
sequences is sqrt(p(1-p)/n): 2.2 points at p = 0.85 and n = 270, 5 points at n = 50, 25 points at
n = 4. The issue behind this module (search quality on small data, issue 20) measured searches
choosing at random among trials tied on a 27-sequence holdout and at 0.000 on a 1-sequence one.
Below `MIN_HOLDOUT` held-out sequences, or `MIN_PER_CLASS` of some class, every training sequence
is scored once instead, out of fold, by k models trained in lockstep (k = 5, the usual choice of
AutoGluon and auto-sklearn's resampling): the selection then sees n sequences, not a tenth of n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lightning_modules.data.sequence_files import DataFileError

MIN_HOLDOUT = 300  # held-out sequences below which a holdout cannot rank trials (see above)
MIN_PER_CLASS = 20  # ... or of one class, for classification
MIN_SELECT = 20  # sequences scored per trial below which the start of a job warns
DEFAULT_FOLDS = 5
TRAIN, VAL, TEST, UNUSED = 0, 1, 2, 255  # the split of a row (`assign_rows`)
CODES = {"train": TRAIN, "val": VAL, "test": TEST}
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
STREAMED_FOLDS = (
    "data.validation: folds and refits hold their data in memory; streamed data (large "
    "Parquet, reader: stream) is scored on a holdout: set {holdout: 0.1}"
)


def ratio_split(
    y: np.ndarray, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest) indices: `fraction` of each class (of all rows for regression), seeded."""
    rng = np.random.default_rng(seed)
    taken = [rng.permutation(g)[: int(round(len(g) * fraction))] for g in _groups(y, stratify)]
    taken_idx = np.sort(np.concatenate(taken)).astype(np.int64)
    if len(taken_idx) == 0 and len(y) > 1:  # tiny data: still one example
        taken_idx = np.array([int(rng.integers(len(y)))])
    rest = np.setdiff1d(np.arange(len(y)), taken_idx)
    return taken_idx, rest


def holdout_fraction(cfg) -> float:
    """The fraction a holdout takes of `SequencesData` `cfg`: `validation.holdout`, else
    `val_fraction`."""
    return getattr(cfg.validation, "holdout", None) or cfg.val_fraction


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int, limit: int | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Carve a seeded validation set out of the training examples (the test set never moves)."""
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    if limit is not None:
        train = train[:limit]
    return (x[train], y[train]), (x[val], y[val])


def stratified_folds(y: np.ndarray, k: int, seed: int, stratify: bool) -> np.ndarray:
    """The fold (0..k-1) of every row: disjoint folds covering all rows, of sizes within one of
    each other, each holding its share of every class (classification) or of every range of the
    target (regression: rows dealt in target order), and the same for the same seed."""
    if stratify:
        groups = _groups(y, True)
    else:  # regression: deal rows in order of the (first) target, so every fold spans its range
        target = np.asarray(y, dtype=np.float64).reshape(len(y), -1)[:, 0]
        groups = [np.argsort(target, kind="stable")]
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for g in groups:
        if stratify:
            g = rng.permutation(g)
        else:  # shuffle within each run of k, keeping the deal by target
            g = np.concatenate([rng.permutation(g[i : i + k]) for i in range(0, len(g), k)])
        # The deal goes on where the last class stopped, so small classes spread over folds
        folds[g] = (np.arange(len(g)) + dealt) % k
        dealt += len(g)
    return folds


def _groups(y: np.ndarray, stratify: bool) -> list[np.ndarray]:
    if not stratify:
        return [np.arange(len(y))]
    keys = np.array([str(v) for v in y])
    return [np.flatnonzero(keys == key) for key in np.unique(keys)]


def class_counts(y: np.ndarray) -> list[int]:
    return [len(g) for g in _groups(y, True)]


@dataclass(frozen=True)
class ValidationPlan:
    """How the trials of a job on this data are scored."""

    kind: Literal["folds", "holdout", "fixed", "none"]
    scored: int  # sequences each trial is scored on (folds: every training sequence, once)
    folds: int = 1
    fold_size: int = 0  # folds: sequences per fold (the smallest)
    train_size: int = 0  # sequences a model trains on (folds: the smallest k-1 folds)
    asked: bool = False  # the spec chose it (not `auto`)
    why: str = ""
    median_steps: float = 0.0  # the training sequences' median length (0: not read)

    @property
    def warning(self) -> str:
        """Non-empty when trials would be selected on too few sequences to tell them apart."""
        if self.scored >= MIN_SELECT or self.kind == "none":
            return ""
        what = "cross-validation over" if self.kind == "folds" else "a validation split of"
        return (
            f"validation: trials are selected on {what} {self.scored} sequences, under "
            f"{MIN_SELECT}: their scores move in steps of {1 / max(self.scored, 1):.2f} and "
            "the choice is mostly chance; add validation data"
        )

    def describe(self) -> str:
        if self.kind == "none":
            return f"none: all {self.train_size} training sequences train the model (a refit)"
        if self.kind == "folds":
            return (
                f"{self.folds}-fold cross-validation: {self.folds} models per trial, each trained "
                f"on ~{self.train_size} and scored on ~{self.fold_size} sequences "
                f"({self.scored} scored per trial){self.why}"
            )
        source = "the given validation split" if self.kind == "fixed" else "a holdout"
        return f"{source} of {self.scored} sequences{self.why}"


def assign_rows(
    cfg,
    seed: int,
    y: np.ndarray,
    split_values: np.ndarray | None = None,
    val_rows: int | None = None,
    in_memory: bool = True,
    complete: bool = True,
) -> tuple[np.ndarray, ValidationPlan]:
    """The split of every row of `data.url` (TRAIN, VAL, TEST or UNUSED) as the spec's split
    options say, and how trials are scored on it. Every reader splits through this one rule.

    `cfg` is `SequencesData`; `y` the rows' labels or targets; `split_values` its split column;
    `val_rows` the sequences at `val_url`; `in_memory` False for streamed data (no folds);
    `complete` False for a sample (which may miss a split). The test rows never move with
    `seed`; `limit` samples the training rows (files are often sorted by label) before any
    validation is carved from them. Under folds or no validation no row is VAL: every
    training row is scored, out of fold."""
    codes = np.full(len(y), TRAIN, dtype=np.uint8)
    stratify = cfg.task == "classification"
    if split_values is not None:
        names = [SPLIT_NAMES.get(str(v).lower()) for v in split_values]
        unknown = sorted({str(v) for v, n in zip(split_values, names, strict=True) if n is None})
        if unknown:
            raise DataFileError(
                f"data.split_column: values {unknown[:5]} are not train, val (validation) or test"
            )
        codes[:] = [CODES[n] for n in names]
        missing = [s for s, c in CODES.items() if not (codes == c).any()]
        if missing and complete:
            raise DataFileError(f"data.split_column: no {missing[0]} sequences in {cfg.url}")
        _limit(codes, cfg.limit, seed)
        plan = ValidationPlan(
            "fixed", int((codes == VAL).sum()), train_size=int((codes == TRAIN).sum()), asked=True
        )
        return codes, plan
    if not cfg.test_url:
        test, _ = ratio_split(y, cfg.test_fraction, cfg.split_seed, stratify)
        codes[test] = TEST
    _limit(codes, cfg.limit, seed)
    rows = np.flatnonzero(codes == TRAIN)
    plan = plan_validation(
        cfg.validation,
        cfg.val_fraction,
        len(rows),
        class_counts(y[rows]) if stratify else None,
        val_rows,
        in_memory,
    )
    if plan.kind == "holdout":
        val, _ = ratio_split(y[rows], holdout_fraction(cfg), seed, stratify)
        codes[rows[val]] = VAL
    return codes, plan


def _limit(codes: np.ndarray, limit: int | None, seed: int) -> None:
    """Keep a seeded sample of `limit` training rows; the others become UNUSED."""
    if limit is None:
        return
    train = np.flatnonzero(codes == TRAIN)
    codes[train[np.random.default_rng(seed).permutation(len(train))[limit:]]] = UNUSED


def plan_validation(
    validation,
    val_fraction: float,
    pool: int,
    counts: list[int] | None,
    fixed_val: int | None,
    in_memory: bool = True,
) -> ValidationPlan:
    """The plan for `pool` training sequences (before any validation is carved out), `counts`
    per class for classification, `fixed_val` sequences when validation data is given;
    `in_memory` False for streamed data, which is never cross-validated.

    `validation` is `SequencesData.validation`: "auto", "none", `Folds` or `Holdout`.
    """
    if fixed_val is not None:
        return ValidationPlan("fixed", fixed_val, train_size=pool, asked=True)
    k = getattr(validation, "folds", None)
    if not in_memory and (k is not None or validation == "none"):
        raise DataFileError(STREAMED_FOLDS)
    if validation == "none":
        return ValidationPlan("none", 0, train_size=pool, asked=True)
    fraction = getattr(validation, "holdout", None) or val_fraction
    held = max(1, int(round(pool * fraction)))
    smallest = min(counts) if counts else None
    if validation == "auto" and not in_memory:
        return ValidationPlan("holdout", held, train_size=pool - held, why=" (streamed)")
    if validation == "auto":
        small = held < MIN_HOLDOUT or (smallest is not None and smallest * fraction < MIN_PER_CLASS)
        if not small:
            return ValidationPlan(
                "holdout", held, train_size=pool - held, why=f" (auto: {pool} sequences)"
            )
        # Each fold should hold every class: no more folds than the smallest class has members
        k = max(2, min(DEFAULT_FOLDS, smallest or DEFAULT_FOLDS, pool))
        reason = (
            f"a {fraction:g} holdout would hold {held} sequences"
            + (f", {smallest * fraction:.0f} of the smallest class" if smallest else "")
            + f"; under {MIN_HOLDOUT}"
            + (f" or {MIN_PER_CLASS} per class" if smallest else "")
        )
        return _folds(pool, k, asked=False, why=f" (auto: {reason})")
    if k is not None:
        return _folds(pool, min(k, pool), asked=True)
    return ValidationPlan("holdout", held, train_size=pool - held, asked=True)


def _folds(pool: int, k: int, asked: bool, why: str = "") -> ValidationPlan:
    fold = pool // k
    return ValidationPlan(
        "folds",
        pool,
        folds=k,
        fold_size=fold,
        train_size=pool - -(-pool // k),
        asked=asked,
        why=why,
    )
