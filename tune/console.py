"""The search as a person reads it: one line per ended trial, and one status line (done,
running, early-stopped, failed, the best so far, elapsed and estimated time) refreshed in
place on a terminal, every 30 s in a log. `--verbose` brings Tune's own tables back instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ray import tune as ray_tune

from tune import outcome as O
from tune.report import short
from tune.space import Distribution, trial_count
from tune.spec import JobSpec
from tune.trial_logger import MlflowTrialLogger

LOG_EVERY_S = 30.0  # status lines when the output is not a terminal (a job's driver log)


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class LiveView(ray_tune.Callback):
    """Reads how trials ended and their best epochs from the trial logger (which runs first)."""

    def __init__(
        self,
        spec: JobSpec,
        logger: MlflowTrialLogger,
        stream: TextIO | None = None,
        search_budget_s: float | None = None,
    ):
        self.spec, self.logger = spec, logger
        self.total = trial_count(spec)  # None: as many as the time budget allows
        self.search_budget_s = search_budget_s
        self.searched = [k for k, v in spec.space.items() if isinstance(v, Distribution)]
        self.running: set[str] = set()
        self.done = len(logger.ends)  # a resumed job counts the trials its first driver ended
        self.started = time.monotonic()
        self.shown_at = 0.0
        self._stream = stream
        self._status_shown = False

    def __getstate__(self) -> dict:  # pickled with Tune's experiment state: no stream
        return {**self.__dict__, "_stream": None, "_status_shown": False}

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._status()

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._status()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._status()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._ended(trial)

    def _ended(self, trial) -> None:
        self.running.discard(trial.trial_id)
        self.done += 1
        end = self.logger.ends.get(trial.trial_id, O.TrialEnd(O.COMPLETED))
        self._print(self.trial_line(trial, end))
        self._status(force=self.stream.isatty())  # in a log, the trial line says enough

    def trial_line(self, trial, end: O.TrialEnd) -> str:
        metric, _ = self.spec.monitor
        config = " ".join(f"{k}={short(trial.config.get(k))}" for k in self.searched)
        epochs = int((trial.last_result or {}).get("epoch", 0))
        text = (
            f"{self.done:>3}/{self.total or '-'} {trial.trial_id}  {config}  "
            f"{end.end.replace('_', '-')}"
        )
        text += f" after {epochs} epoch{'s' * (epochs != 1)}"
        best = self.logger.best.get(trial.trial_id)
        if best is not None:
            text += f", best {metric} {best[0]:.4f} at epoch {best[1]}"
        if end.reason:
            text += f": {end.reason[:120]}"
        return text

    def status_line(self) -> str:
        metric, mode = self.spec.monitor
        ends = [e.end for e in self.logger.ends.values()]
        early = ends.count(O.EARLY_STOPPED) + ends.count(O.BUDGET_STOPPED)
        failed = sum(ends.count(e) for e in O.FAILED_ENDS)
        elapsed = time.monotonic() - self.started
        parts = [
            f"{self.done}/{self.total} trials done" if self.total else f"{self.done} trials done",
            f"{len(self.running)} running",
            f"{early} early-stopped",
            f"{failed} failed",
        ]
        scored = [(v, t) for t, (v, _) in self.logger.best.items()]
        if scored:
            value, trial_id = (max if mode == "max" else min)(scored)
            parts.append(f"best {metric} {value:.4f} ({trial_id})")
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.search_budget_s is not None:
            left = max(0.0, self.search_budget_s - elapsed)
            parts.append(f"{_duration(left)} of the search budget left")
        elif self.total and 0 < self.done < self.total:
            parts.append(f"~{_duration(elapsed / self.done * (self.total - self.done))} left")
        return " | ".join(parts)

    def _status(self, force: bool = False) -> None:
        now = time.monotonic()
        tty = self.stream.isatty()
        if not force and now - self.shown_at < (1.0 if tty else LOG_EVERY_S):
            return
        self.shown_at = now
        if tty:
            self.stream.write("\r\033[K" + self.status_line())
            self._status_shown = True
        else:
            self.stream.write(self.status_line() + "\n")
        self.stream.flush()

    def _print(self, line: str) -> None:
        if self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """The last status on a line of its own, before the summary."""
        if self._status_shown:
            self.stream.write("\r\033[K")
        self.stream.write(self.status_line() + "\n")
        self.stream.flush()
        self._status_shown = False
        self.shown_at = time.monotonic()
