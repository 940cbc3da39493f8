"""The job outcome model: one verdict from the trials' ends, one-line causes from tracebacks."""

from __future__ import annotations

from tune import outcome as O

RAY_ERROR = """Failure # 1 (occurred at 2026-12-03_07-20-11)
ray::ImplicitFunc.train() (pid=123, ip=127.0.0.1, actor_id=abc)
  File "ray/tune/trainable/function_trainable.py", line 331, in entrypoint
    return self._trainable_func(
  File "lightning_modules/data/text.py", line 45, in load
    text = f.read()
UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte
"""


def test_exception_line_names_the_exception_and_its_message():
    line = O.exception_line(RAY_ERROR)
    assert line.startswith("UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff")
    assert O.exception_line("builtins.FileNotFoundError: [Errno 2] nope") == (
        "FileNotFoundError: [Errno 2] nope"
    )
    assert O.exception_line("no exception here\nlast words") == "last words"


def test_outcome_counts_ends_and_takes_the_first_failed_trials_cause():
    ends = {
        "a": O.TrialEnd(O.COMPLETED),
        "b": O.TrialEnd(O.EARLY_STOPPED),
        "c": O.TrialEnd(O.ERROR, "OSError: [Errno 30] Read-only file system"),
        "d": O.TrialEnd(O.DIVERGED, "diverged at epoch 2: ..."),
    }
    partial = O.decide(ends, usable=True, stopped=False)
    assert partial.kind == O.PARTIAL and partial.exit_code == 0
    assert sum(partial.counts.get(e, 0) for e in O.FAILED_ENDS) == 2
    assert partial.cause == "OSError: [Errno 30] Read-only file system"
    assert partial.counts == {"completed": 1, "early_stopped": 1, "diverged": 1, "error": 1}
    assert "succeeded with failed trials (4 trials: 1 completed" in partial.line()

    failed = O.decide({"c": ends["c"]}, usable=False, stopped=False)
    assert failed.kind == O.FAILED and failed.exit_code == 1
    assert failed.line().endswith("first cause: OSError: [Errno 30] Read-only file system")
    assert O.decide({}, usable=False, stopped=False).cause == "no trial reported the job's metric"

    ok = O.decide({"a": ends["a"], "b": ends["b"]}, usable=True, stopped=False)
    assert ok.kind == O.SUCCEEDED and not ok.cause
    stopped = O.decide({"a": ends["a"]}, usable=True, stopped=True)
    assert stopped.kind == O.STOPPED and O.PARENT_STATUS[stopped.kind] == "KILLED"
