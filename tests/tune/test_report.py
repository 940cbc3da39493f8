"""Job summaries pick the best trial from measured values only, never from a stand-in."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field

import pandas as pd
from ray.train import Checkpoint

from tune.driver import _best_checkpoint
from tune.report import best_value, measured, ranked_results
from tune.trials import NON_FINITE


@dataclass
class FakeResult:  # the fields of a Tune Result the summary reads
    metrics_dataframe: pd.DataFrame | None
    path: str = ""
    best_checkpoints: list = field(default_factory=list)


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


def test_ranked_results_skip_trials_that_never_measured_the_metric():
    failed = FakeResult(pd.DataFrame({"train_loss": [2.3]}))  # raised before validating
    empty = FakeResult(None)
    diverged = FakeResult(_frame([0.0, 0.0], [True, True]))
    good = FakeResult(_frame([0.5, 0.7], [False, False]))
    better_then_diverged = FakeResult(_frame([0.8, 0.0], [False, True]))
    assert ranked_results([failed, empty, diverged], "val_acc", "max") == []
    assert ranked_results([failed, good, diverged], "val_acc", "max") == [good]
    assert ranked_results([good, better_then_diverged], "val_acc", "max") == [
        better_then_diverged,
        good,
    ]


def _trial(tmp_path, name: str, accs: list[float]) -> FakeResult:
    """A finished trial with one kept checkpoint per epoch, each holding its epoch number."""
    kept = []
    for epoch, acc in enumerate(accs):
        folder = tmp_path / name / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        (folder / "model.ckpt").write_text(f"{name} epoch {epoch}")
        kept.append((Checkpoint.from_directory(str(folder)), {"val_acc": acc}))
    return FakeResult(_frame(accs, [False] * len(accs)), str(tmp_path / name), kept)


def test_a_trial_whose_checkpoints_are_gone_is_passed_over_and_named(tmp_path):
    best = _trial(tmp_path, "best", [0.5, 0.9])
    second = _trial(tmp_path, "second", [0.7, 0.6])
    third = _trial(tmp_path, "third", [0.4])
    dest = tmp_path / "dest"
    result, ckpt, uri, missing = _best_checkpoint([third, second, best], "val_acc", "max", dest)
    assert result is best and ckpt.read_text() == "best epoch 1" and missing == []
    assert uri == (tmp_path / "best" / "checkpoint_000001").as_uri()  # the source, not the copy
    shutil.rmtree(tmp_path / "best" / "checkpoint_000001")  # its best epoch's checkpoint only
    result, ckpt, _, missing = _best_checkpoint([third, second, best], "val_acc", "max", dest / "a")
    assert result is best and ckpt.read_text() == "best epoch 0" and missing == []
    shutil.rmtree(tmp_path / "best")
    result, ckpt, _, missing = _best_checkpoint([third, second, best], "val_acc", "max", dest / "b")
    assert result is second and ckpt.read_text() == "second epoch 0"
    assert len(missing) == 1 and missing[0].startswith("best: no kept checkpoint")
    shutil.rmtree(tmp_path / "second")
    shutil.rmtree(tmp_path / "third")
    result, ckpt, _, missing = _best_checkpoint([third, second, best], "val_acc", "max", dest / "c")
    assert result is None and ckpt is None and len(missing) == 3


def test_the_console_summary_and_the_run_description_say_the_same_facts():
    from tune import outcome as O
    from tune.driver import JobSummary, describe, format_summary
    from tune.registry import Registration

    registration = Registration(
        model_name="vowels", version="3", test_metric="test_acc", test_value=0.9841,
        test_metrics={}, promoted=True, reason="test_acc 0.9841 beats champion v2 (0.9730)",
        previous_champion="2", previous_value=0.973, data_fingerprint="f",
    )  # fmt: skip
    summary = JobSummary(
        job_id="j", parent_run_id="p", tracking_uri="sqlite://", ui_command="rnntune ui j",
        outcome=O.Outcome(O.SUCCEEDED, {"completed": 3, "early_stopped": 1}),
        best_config={"cell_type": "gru", "lr": 0.0031234}, best_metric=0.99, metric="val_acc",
        registration=registration,
    )  # fmt: skip
    console, markdown = format_summary(summary), describe(summary)
    for text in (console, markdown):
        assert "cell_type=gru, lr=0.003123" in text and "0.9900" in text
        assert "v3 (test_acc 0.9841)" in text
        assert "promoted to champion: test_acc 0.9841 beats champion v2 (0.9730)" in text
    assert "registered vowels v3 (test_acc 0.9841) as challenger; promoted" in console
    assert "**Registered** `vowels` v3" in markdown and "3 completed, 1 early-stopped" in console


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
