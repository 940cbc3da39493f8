"""Job summaries pick the best trial from measured values only, never from a stand-in."""

from __future__ import annotations

import math

import pandas as pd

from tests.support.tune_results import FakeResult, frame
from tune.report import best_value, measured, ranked_results


def test_a_stand_in_value_is_not_a_measurement():
    df = frame([0.4, 0.6, 0.0], [False, False, True])  # epoch 3 diverged: 0.0 for the scheduler
    curve = measured(df, "val_acc")
    assert curve[:2] == [0.4, 0.6] and math.isnan(curve[2])
    assert best_value(df, "val_acc", "max") == 0.6
    assert best_value(frame([1e9], [True]), "val_loss", "min") is None  # no val_loss column
    assert best_value(frame([0.0], [True]), "val_acc", "max") is None


def test_ranked_results_skip_trials_that_never_measured_the_metric():
    failed = FakeResult(pd.DataFrame({"train_loss": [2.3]}))  # raised before validating
    empty = FakeResult(None)
    diverged = FakeResult(frame([0.0, 0.0], [True, True]))
    good = FakeResult(frame([0.5, 0.7], [False, False]))
    better_then_diverged = FakeResult(frame([0.8, 0.0], [False, True]))
    assert ranked_results([failed, empty, diverged], "val_acc", "max") == []
    assert ranked_results([failed, good, diverged], "val_acc", "max") == [good]
    assert ranked_results([good, better_then_diverged], "val_acc", "max") == [
        better_then_diverged,
        good,
    ]


def test_the_best_per_cell_table_has_a_column_per_searched_parameter():
    from tune.report import TrialRow, cell_table, summary_text

    def row(trial, cell, best, **params):
        return TrialRow(
            trial, cell, 1, 32, None, False, best, 10, 0.3, "ok", [],
            {"cell_type": cell, **params},
        )  # fmt: skip

    rows = [
        row("a", "gru", 0.91, patch=2, lr=0.00312),
        row("b", "lstm", 0.95, patch=4, lr=0.001),
        row("c", "gru", 0.93, patch=8, lr=0.01),
    ]
    markdown = cell_table(rows, "val_acc", "max").splitlines()
    assert (
        markdown[0] == "| cell_type | best val_acc | lr | patch | epochs | mean epoch s | trials |"
    )
    assert markdown[2] == "| gru | 0.9300 | 0.01 | 8 | 10 | 0.30 | 2 |"
    text = summary_text(rows, "val_acc", "max").splitlines()
    assert text[0].split()[:6] == ["cell_type", "best", "val_acc", "lr", "patch", "epochs"]
    assert text[2].split() == ["lstm", "0.9500", "0.001", "4", "10", "0.30", "1"]
