"""A finished job's summary: the console and the run's description say the same facts."""

from __future__ import annotations

from tune import outcome as O
from tune.registry import Registration
from tune.summary import JobSummary, describe, format_summary


def test_the_console_summary_and_the_run_description_say_the_same_facts():
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
