"""One split module: ratio splits, stratified folds, and the rule that picks folds or a holdout."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_modules.data.splits import (
    MIN_HOLDOUT,
    MIN_SELECT,
    plan_validation,
    ratio_split,
    stratified_folds,
)
from lightning_modules.datasets.sequences import Folds, Holdout, SequencesData


def _labels(counts: dict[str, int]) -> np.ndarray:
    return np.array([c for c, n in counts.items() for _ in range(n)])


def test_folds_are_disjoint_cover_every_row_and_hold_each_class():
    y = _labels({"a": 50, "b": 23, "c": 7})
    folds = stratified_folds(y, 5, seed=3, stratify=True)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]  # every row in exactly one fold
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in ("a", "b", "c"):
        per_fold = np.bincount(folds[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, (c, per_fold)  # stratified


def test_folds_are_deterministic_under_a_seed_and_move_with_it():
    y = _labels({"a": 30, "b": 30})
    a = stratified_folds(y, 5, seed=0, stratify=True)
    assert np.array_equal(a, stratified_folds(y, 5, seed=0, stratify=True))
    assert not np.array_equal(a, stratified_folds(y, 5, seed=1, stratify=True))


def test_regression_folds_span_the_target_range():
    y = np.linspace(0, 100, 50).reshape(-1, 1)
    folds = stratified_folds(y, 5, seed=0, stratify=False)
    for i in range(5):
        mine = y[folds == i, 0]
        assert len(mine) == 10 and mine.min() < 10 and mine.max() > 90


def test_ratio_split_takes_a_share_of_each_class():
    y = _labels({"a": 40, "b": 20})
    taken, rest = ratio_split(y, 0.25, seed=0, stratify=True)
    assert len(np.intersect1d(taken, rest)) == 0 and len(taken) + len(rest) == 60
    assert (y[taken] == "a").sum() == 10 and (y[taken] == "b").sum() == 5


@pytest.mark.parametrize(
    ("pool", "counts", "kind", "folds"),
    [
        (40, [10, 10, 10, 10], "folds", 5),  # a 4-sequence holdout cannot select
        (270, [30] * 9, "folds", 5),  # JapaneseVowels: 27 held out, 3 per class
        (50, [5] * 10, "folds", 5),
        (30, [3] * 10, "folds", 3),  # no more folds than the smallest class has members
        (4000, [400] * 10, "holdout", 1),  # MNIST-1D sized: a 400-sequence holdout
        (6000, None, "holdout", 1),  # regression
        (1000, None, "folds", 5),  # regression, 100 held out < MIN_HOLDOUT
    ],
)
def test_auto_picks_folds_for_small_data_and_a_holdout_for_large(pool, counts, kind, folds):
    plan = plan_validation("auto", 0.1, pool, counts, None)
    assert plan.kind == kind and plan.folds == folds
    assert not plan.asked
    if kind == "holdout":
        assert plan.scored >= MIN_HOLDOUT
    else:
        assert plan.scored == pool and "auto" in plan.describe()


def test_the_spec_can_force_either_and_fixed_validation_is_kept():
    assert plan_validation(Folds(folds=3), 0.1, 5000, None, None).folds == 3
    held = plan_validation(Holdout(holdout=0.2), 0.1, 40, [20, 20], None)
    assert held.kind == "holdout" and held.scored == 8 and held.asked
    fixed = plan_validation("auto", 0.1, 40, [20, 20], 3)
    assert fixed.kind == "fixed" and fixed.scored == 3


def test_a_split_too_small_to_select_on_warns_by_name():
    fixed = plan_validation("auto", 0.1, 500, None, 3)
    assert "3 sequences" in fixed.warning and f"under {MIN_SELECT}" in fixed.warning
    assert plan_validation(Holdout(holdout=0.05), 0.1, 100, None, None).warning  # 5 held out
    assert not plan_validation("auto", 0.1, 40, [20, 20], None).warning  # folds: 40 scored


def test_folds_with_a_fixed_validation_split_are_refused_by_name():
    with pytest.raises(ValueError, match="validation: folds split the training data"):
        SequencesData(url="x.parquet", val_url="v.parquet", validation={"folds": 5})
