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
