"""The live view: a line per ended trial, and a status line with one definition of best."""

from __future__ import annotations

import io
from types import SimpleNamespace

from tune import outcome as O
from tune.console import LiveView
from tune.spec import parse_job_spec

SPEC = parse_job_spec(
    {
        "data": {"name": "digits"},
        "search_space": {"lr": {"loguniform": [1e-3, 1e-1]}, "hidden_size": 32},
        "search": {"num_samples": 3},
    }
)


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _trial(trial_id: str, lr: float, epochs: int):
    return SimpleNamespace(trial_id=trial_id, config={"lr": lr}, last_result={"epoch": epochs})


def _view(stream) -> tuple[LiveView, SimpleNamespace]:
    logger = SimpleNamespace(ends={}, best={})  # what the view reads of the trial logger
    return LiveView(SPEC, logger, stream), logger


def test_each_ended_trial_gets_one_line_with_its_best_epoch():
    out = io.StringIO()
    view, logger = _view(out)
    a, b = _trial("t_00000", 0.01, 8), _trial("t_00001", 0.0012, 2)
    for t in (a, b):
        view.on_trial_start(0, [], t)
    logger.best.update({"t_00000": (0.91, 6), "t_00001": (0.42, 2)})
    logger.ends["t_00001"] = O.TrialEnd(O.EARLY_STOPPED)
    view.on_trial_complete(0, [], b)
    logger.ends["t_00000"] = O.TrialEnd(O.COMPLETED)
    view.on_trial_complete(0, [], a)
    lines = [line for line in out.getvalue().splitlines() if "/3 t_" in line]
    assert lines == [
        "  1/3 t_00001  lr=0.0012  early-stopped after 2 epochs, best val_acc 0.4200 at epoch 2",
        "  2/3 t_00000  lr=0.01  completed after 8 epochs, best val_acc 0.9100 at epoch 6",
    ]
    status = view.status_line()
    assert status.startswith("2/3 trials done | 0 running | 1 early-stopped | 0 failed | ")
    assert "best val_acc 0.9100 (t_00000)" in status and "left" in status  # 1 trial to go


def test_a_failed_trial_says_why_and_counts_as_failed():
    out = io.StringIO()
    view, logger = _view(out)
    t = _trial("t_00002", 0.05, 1)
    view.on_trial_start(0, [], t)
    logger.ends["t_00002"] = O.TrialEnd(O.ERROR, "ValueError: boom")
    view.on_trial_error(0, [], t)
    assert "error after 1 epoch: ValueError: boom" in out.getvalue()
    assert "| 1 failed |" in view.status_line()


def test_on_a_terminal_the_status_is_redrawn_in_place():
    out = TTY()
    view, _ = _view(out)
    view.on_trial_start(0, [], _trial("t_00000", 0.01, 0))
    view.close()
    text = out.getvalue()
    assert text.startswith("\r\x1b[K0/3 trials done | 1 running") and text.endswith("\n")
    assert text.count("\n") == 1  # the redrawn line, then the final status on its own line
