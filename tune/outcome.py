"""One outcome per job and per trial, said the same way by the CLI, the service, MLflow and the summary.

A job succeeded when it produced a usable best trial and no trial failed; succeeded with failed
trials when it produced one but some trials failed (an error or a divergence); failed when no
trial is usable; stopped when the user (or the service) stopped it. Trials stopped early by the
scheduler are a normal part of a search, not failures.

Light on purpose (no torch, Ray or MLflow): the job service reads these names too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Job outcomes.
SUCCEEDED = "succeeded"
PARTIAL = "succeeded_with_failed_trials"
FAILED = "failed"
STOPPED = "stopped"
EXIT_CODE = {SUCCEEDED: 0, PARTIAL: 0, FAILED: 1, STOPPED: 130}  # a model was made: exit 0
PARENT_STATUS = {SUCCEEDED: "FINISHED", PARTIAL: "FINISHED", FAILED: "FAILED", STOPPED: "KILLED"}

# Trial ends, as MLflow child runs record them (status, then `rnntune.trial_end` tag).
COMPLETED = "completed"  # ran its epochs or stopped itself (early stopping, time limit)
EARLY_STOPPED = "early_stopped"  # stopped by the scheduler (ASHA, HyperBand, median, PBT)
DIVERGED = "diverged"  # loss non-finite or exploding: stopped, not usable
ERROR = "error"  # raised
BUDGET_STOPPED = "budget_stopped"  # cut when the search's time budget ran out; scored as it was
INTERRUPTED = "interrupted"  # never ended: the job was stopped or crashed
TRIAL_ENDS = (COMPLETED, EARLY_STOPPED, BUDGET_STOPPED, DIVERGED, ERROR, INTERRUPTED)
FAILED_ENDS = (DIVERGED, ERROR)
RUN_STATUS = {DIVERGED: "FAILED", ERROR: "FAILED", INTERRUPTED: "KILLED"}  # else FINISHED

# MLflow tags: runs of a job; the parent's outcome and cause; each child's end and reason.
PARENT_TAG = "mlflow.parentRunId"
JOB_TAG = "rnntune.job_id"
TRIAL_TAG = "rnntune.trial_id"
OUTCOME_TAG = "rnntune.outcome"
CAUSE_TAG = "rnntune.cause"
TRIAL_END_TAG = "rnntune.trial_end"
FAILURE_REASON_TAG = "failure_reason"
REGISTERED_TAG = "rnntune.registered_model"  # on the parent run: models:/NAME/VERSION it made

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)): ?(.*)")


def exception_line(text: str, limit: int = 300) -> str:
    """The line of a traceback (or Ray's error text) that names the exception and its message."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        m = _EXCEPTION_LINE.match(line)
        if m:
            name = m.group(1).rsplit(".", 1)[-1]
            return f"{name}: {m.group(2)}"[:limit] if m.group(2) else name
    return (lines[-1] if lines else "unknown error")[:limit]


@dataclass
class TrialEnd:
    end: str  # one of TRIAL_ENDS
    reason: str = ""  # for failed ends: the exception or the divergence, in one line


@dataclass
class Outcome:
    kind: str  # SUCCEEDED | PARTIAL | FAILED | STOPPED
    counts: dict[str, int] = field(default_factory=dict)  # trial end -> trials
    cause: str = ""  # the first real cause, one line ("" when nothing failed)

    @property
    def exit_code(self) -> int:
        return EXIT_CODE[self.kind]

    def line(self) -> str:
        """The summary's last line: what happened, and why when something failed."""
        counts = ", ".join(f"{n} {end.replace('_', '-')}" for end, n in self.counts.items() if n)
        trials = sum(self.counts.values())
        text = f"outcome: {self.kind.replace('_', ' ')} ({trials_text(trials)}: {counts or 'none'})"
        return f"{text}; first cause: {self.cause}" if self.cause else text


def trials_text(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


class JobFailed(RuntimeError):
    """The job failed and has said so (outcome line, parent run); the message is what else
    went wrong on the way out, for stderr."""


def first_failure(ends: dict[str, TrialEnd]) -> str:
    return next((t.reason for t in ends.values() if t.end in FAILED_ENDS), "")


def decide(ends: dict[str, TrialEnd], usable: bool, stopped: bool, cause: str = "") -> Outcome:
    """The job's outcome from its trials' ends, whether a usable best trial exists, and whether
    the job was stopped. `cause` overrides the first failed trial's reason (a job-level error)."""
    counts = {e: 0 for e in TRIAL_ENDS}
    for t in ends.values():
        counts[t.end] = counts.get(t.end, 0) + 1
    counts = {e: n for e, n in counts.items() if n}
    first = cause or first_failure(ends)
    if stopped:
        kind = STOPPED
    elif not usable:
        kind = FAILED
        first = first or "no trial reported the job's metric"
    elif any(t.end in FAILED_ENDS for t in ends.values()):
        kind = PARTIAL
    else:
        kind = SUCCEEDED
    return Outcome(kind, counts, first)


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI at `base` (http://host:port): the CLI and the service."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
