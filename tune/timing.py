"""Where a job's wall time went: start-up, the search, the final model; and why the search ended.

The job's clock starts with its process (`rnntune run`, or `python -m tune run` on a cluster),
so `budget.time_budget_s` bounds what the user waits for, imports and Ray's start included.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tune.outcome import trials_text
from tune.spec import JobSpec


@dataclass
class Timing:
    total_s: float
    startup_s: float  # process start to the search's start: imports, Ray, MLflow, data read
    search_s: float
    final_s: float  # after the search: the final model's test, registration, figures
    budget_s: float | None
    search_ended: str  # why the search ended
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, in order

    def line(self) -> str:
        budget = f" of a {self.budget_s:.0f} s budget" if self.budget_s else ""
        return (
            f"time: {self.total_s:.0f} s{budget}: {self.startup_s:.0f} s start-up, "
            f"{self.search_s:.0f} s search ({self.search_ended}), {self.final_s:.0f} s final "
            "model (test, registration, figures)"
        )


@dataclass
class JobClock:
    started: float  # time.time() when the job's process started
    search_start: float = 0.0
    search_end: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of the job (imports, tracking, data, ray, search, test, ...), what
    `bench/fixed_cost.py` reads back from the parent run's `time_phase_*_s` metrics."""

    def elapsed(self) -> float:
        return time.time() - self.started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Times a phase of the job; a phase entered again adds up."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def split(self, search_budget_s: float | None, spec: JobSpec, trials: int) -> Timing:
        now = time.time()
        search = self.search_end - self.search_start
        if search_budget_s is not None and search >= search_budget_s - 1.0:
            why = "the time budget was reached"
        elif spec.search.algorithm == "grid":
            why = f"the grid's {trials_text(trials)} ran"
        elif spec.samples > 0:
            why = f"all {trials_text(trials)} ran (search.num_samples)"
        else:
            why = f"{trials_text(trials)} ran"
        return Timing(
            total_s=now - self.started,
            startup_s=self.search_start - self.started,
            search_s=search,
            final_s=now - self.search_end,
            budget_s=spec.budget.time_budget_s,
            search_ended=why,
            phases=dict(self.phases),
        )


def log_timing(client: MlflowClient, parent: str, t: Timing) -> None:
    """The split on the parent run: `time_startup_s`, `time_search_s`, `time_final_s`, and
    `time_phase_<name>_s` per phase."""
    now = int(time.time() * 1000)
    values = (
        ("time_total_s", t.total_s),
        ("time_startup_s", t.startup_s),
        ("time_search_s", t.search_s),
        ("time_final_s", t.final_s),
        *((f"time_phase_{k}_s", v) for k, v in t.phases.items()),
    )
    client.log_batch(parent, metrics=[Metric(k, round(v, 3), now, 0) for k, v in values])
    client.set_tag(parent, "rnntune.search_ended", t.search_ended)
