"""What a finished job says: one summary, rendered for the console and as the run's description."""

from __future__ import annotations

from dataclasses import dataclass, field

from tune import outcome as O
from tune import report
from tune.importance import Importance
from tune.registry import Registration
from tune.timing import Timing


@dataclass
class JobSummary:
    job_id: str
    parent_run_id: str
    tracking_uri: str
    ui_command: str
    outcome: O.Outcome
    best_config: dict
    best_metric: float | None
    metric: str
    registration: Registration | None
    cell_table: str = ""
    errors: list[str] = field(default_factory=list)  # one line per failed trial
    passed_over: list[str] = field(default_factory=list)  # better trials without a checkpoint
    tracking_lost: int = 0  # MLflow writes dropped (refused, or an outage beyond its budget)
    importance: Importance | None = None  # what mattered, over the trials that measured
    timing: Timing | None = None  # where the job's time went

    @property
    def trials(self) -> int:
        return sum(self.outcome.counts.values())

    @property
    def trial_states(self) -> dict[str, int]:
        return self.outcome.counts


def _counts(s: JobSummary, sep: str) -> str:
    return ", ".join(f"{v} {k.replace('_', sep)}" for k, v in s.trial_states.items())


def _best_config(s: JobSummary) -> str:
    return ", ".join(f"{k}={report.short(v, 4)}" for k, v in s.best_config.items())


def _registered(r, name: str) -> tuple[str, str]:
    """(what was registered, the champion verdict) as both renderings of a summary say it."""
    what = f"{name} v{r.version} ({r.test_metric} {r.test_value:.4f})"
    verdict = "promoted to champion" if r.promoted else "champion unchanged"
    return what, f"{verdict}: {r.reason}"


def describe(s: JobSummary) -> str:
    """The parent run's description (Markdown): trials, the best one, the model, what mattered;
    the same facts as the console's `format_summary`."""
    outcome = s.outcome.line().removeprefix("outcome: ")
    lines = [f"**{s.trials} trials** ({_counts(s, ' ')}); {outcome}."]
    if s.best_metric is not None:
        lines.append(f"**Best {s.metric}**: {s.best_metric:.4f} ({_best_config(s)}).")
    if s.registration:
        what, verdict = _registered(s.registration, f"`{s.registration.model_name}`")
        lines.append(f"**Registered** {what}: {verdict}.")
    if s.importance:
        what, shares = s.importance.line().split(": ", 1)
        lines.append(f"**{what[0].upper()}{what[1:]}**: {shares}.")
    return "\n\n".join(lines)


def format_summary(s: JobSummary) -> str:
    lines = [f"\njob {s.job_id}: {O.trials_text(s.trials)} ({_counts(s, '-')})"]
    if s.cell_table:
        lines += ["best trial per cell type:", s.cell_table]
    if s.best_metric is not None:
        lines.append(f"best {s.metric}: {s.best_metric:.4f} with {_best_config(s)}")
    if s.registration:
        what, verdict = _registered(s.registration, s.registration.model_name)
        lines.append(f"registered {what} as challenger; {verdict}")
    for e in s.errors[:5]:
        lines.append(f"failed trial: {e}")
    for p in s.passed_over[:5]:
        lines.append(f"passed over a better trial, its checkpoints are gone: {p}")
    if s.importance:
        lines.append(s.importance.line())
    if s.tracking_lost:
        lines.append(f"{s.tracking_lost} MLflow writes were lost (see the messages above)")
    if s.timing:
        lines.append(s.timing.line())
    lines.append(f"MLflow parent run {s.parent_run_id}; see every trial with:\n  {s.ui_command}")
    lines.append(s.outcome.line())
    return "\n".join(lines)
