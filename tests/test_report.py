"""Job summaries pick the best trial from measured values only, never from a stand-in."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from tune.report import best_result, best_value, measured
from tune.trainable import NON_FINITE


@dataclass
class FakeResult:  # the two fields of a Tune Result the summary reads
    metrics_dataframe: pd.DataFrame | None
    path: str = ""


def _frame(values: list[float], imputed: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {"val_acc": values, NON_FINITE: ["val_acc,val_loss" if i else "" for i in imputed]}
    )


def test_a_stand_in_value_is_not_a_measurement():
    df = _frame([0.4, 0.6, 0.0], [False, False, True])  # epoch 3 diverged: 0.0 for the scheduler
    curve = measured(df, "val_acc")
    assert curve[:2] == [0.4, 0.6] and math.isnan(curve[2])
    assert best_value(df, "val_acc", "max") == 0.6
    assert best_value(_frame([1e9], [True]), "val_loss", "min") is None  # no val_loss column
    assert best_value(_frame([0.0], [True]), "val_acc", "max") is None


def test_best_result_skips_trials_that_never_measured_the_metric():
    failed = FakeResult(pd.DataFrame({"train_loss": [2.3]}))  # raised before validating
    empty = FakeResult(None)
    diverged = FakeResult(_frame([0.0, 0.0], [True, True]))
    good = FakeResult(_frame([0.5, 0.7], [False, False]))
    better_then_diverged = FakeResult(_frame([0.8, 0.0], [False, True]))
    assert best_result([failed, empty, diverged], "val_acc", "max") is None
    assert best_result([failed, good, diverged], "val_acc", "max") is good
    assert best_result([good, better_then_diverged], "val_acc", "max") is better_then_diverged
