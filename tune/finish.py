"""The end of a job's search: how each trial ended, the figures, the model registered, the
parent run closed with the job's outcome, and the summary."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from tune import outcome as O
from tune import report
from tune.final import refit
from tune.importance import importances, log_importance
from tune.registry import Lineage, register_best
from tune.spec import JobSpec
from tune.summary import JobSummary, describe
from tune.timing import JobClock
from tune.tracking import Tracking, open_ui_hint
from tune.trials import CHECKPOINT_FILE
from tune.writer import disk_full

MISSING_CHECKPOINT_TAG = "rnntune.best_checkpoint_missing"
logger = logging.getLogger(__name__)


@dataclass
class OpenJob:
    """A job whose parent run is open: what its search and its end work with."""

    spec: JobSpec
    job_id: str
    tracking: Tracking
    client: MlflowClient
    parent: str
    clock: JobClock


def finish(
    job: OpenJob, results, ends: dict[str, O.TrialEnd], runs: dict[str, str], tracking_lost: int
) -> JobSummary:
    """`ends`: how trials ended as the trial logger saw it; `runs`: trial id -> MLflow run."""
    spec, client, parent = job.spec, job.client, job.parent
    metric, mode = spec.monitor
    ends = _ends(results, ends)
    rows = report.trial_rows(spec, results, ends)
    with tempfile.TemporaryDirectory() as tmp:
        importance = _figures(job, rows, results, Path(tmp))
        # A trial that raised (its storage full or read-only, a bug) is not a model to ship,
        # whatever it measured before: only trials that ended well are candidates.
        healthy = [r for r in results if _end_of(r, ends) not in O.FAILED_ENDS]
        best, missing, registration = _choose_and_register(job, healthy, runs, Path(tmp))
    best_value = report.best_value(best.metrics_dataframe, metric, mode) if best else None
    if best_value is not None:
        client.log_metric(parent, f"best_{metric}", best_value)
    if tracking_lost:
        client.set_tag(parent, "rnntune.tracking_writes_lost", str(tracking_lost))
    lost = "" if best is not None or not missing else "no checkpoint left: " + missing[0]
    end = O.decide(ends, usable=best_value is not None, stopped=False, cause=lost)
    close_parent(client, parent, end)
    summary = JobSummary(
        job_id=job.job_id,
        parent_run_id=parent,
        tracking_uri=job.tracking.uri,
        ui_command=open_ui_hint(spec, job.tracking, job.job_id, parent),
        outcome=end,
        best_config=dict(best.config) if best else {},
        best_metric=best_value,
        metric=metric,
        registration=registration,
        cell_table=report.summary_text(rows, metric, mode) if rows else "",
        errors=[t.reason for t in ends.values() if t.end in O.FAILED_ENDS],
        passed_over=missing if best is not None else [],
        tracking_lost=tracking_lost,
        importance=importance,
    )
    client.set_tag(parent, "mlflow.note.content", describe(summary))  # the run's description
    return summary


def _figures(job: OpenJob, rows: list, results, folder: Path):
    """The comparison figure and table, and the importances, on the parent run."""
    metric, mode = job.spec.monitor
    with job.clock.phase("figures"):
        if rows:
            report.comparison_figure(job.spec, rows, metric, mode, folder / "comparison.png")
            job.client.log_artifact(job.parent, str(folder / "comparison.png"))
            job.client.log_text(job.parent, report.cell_table(rows, metric, mode), "cell_types.md")
    with job.clock.phase("importance"):
        return _importance(job, results, folder)


def _choose_and_register(job: OpenJob, healthy: list, runs: dict[str, str], folder: Path):
    """(the best trial with a checkpoint or None, lines for better ones without, the
    registration or None)."""
    metric, mode = job.spec.monitor
    with job.clock.phase("checkpoint"):
        best, ckpt, ckpt_uri, missing = best_checkpoint(healthy, metric, mode, folder / "best")
    if missing:  # a better trial is not the one registered (or none is): say why
        job.client.set_tag(job.parent, MISSING_CHECKPOINT_TAG, "; ".join(missing)[:5000])
    if best is None or not job.spec.registry.enabled:
        return best, missing, None
    trial_id = str(best.metrics.get("trial_id", ""))
    final = ""
    if job.spec.registry.final_model == "refit":
        with job.clock.phase("refit"):
            ckpt, final = _refit(best, ckpt, metric, mode, folder / "refit")
    with job.clock.phase("registration"):  # the test split, the model, its aliases
        lineage = Lineage(runs.get(trial_id), trial_id, ckpt_uri, final)
        registration = register_best(
            job.spec, job.job_id, job.parent, job.tracking.uri, ckpt, lineage=lineage
        )
    return best, missing, registration


def best_checkpoint(results, metric: str, mode: str, dest: Path):
    """The best trial that still has a checkpoint, its best-scoring kept checkpoint copied to
    `dest` and that checkpoint's URI, and one line per better trial whose checkpoints are gone
    (storage lost them, or a resumed search's state named checkpoints pruned after it was
    saved). (None, None, None, lines) when no trial has one."""
    missing = []
    for attempt, result in enumerate(report.ranked_results(results, metric, mode)):
        kept = [(c, m) for c, m in (result.best_checkpoints or []) if metric in m]
        kept.sort(key=lambda cm: cm[1][metric], reverse=mode == "max")
        for ckpt, _ in kept:
            try:
                folder = ckpt.to_directory(str(dest / str(attempt)))
            except FileNotFoundError:
                continue
            kind = ckpt.filesystem.type_name if ckpt.filesystem else "local"
            uri = Path(ckpt.path).as_uri() if kind == "local" else f"{kind}://{ckpt.path}"
            return result, Path(folder) / CHECKPOINT_FILE, uri, missing
        name = Path(result.path).name if result.path else "?"
        missing.append(
            f"{name}: no kept checkpoint under {result.path}" if kept else f"{name}: no checkpoint"
        )
    return None, None, None, missing


def close_parent(client: MlflowClient, parent: str, end: O.Outcome) -> None:
    """The parent run says the job's outcome: status, outcome and first-cause tags."""
    tags = {O.OUTCOME_TAG: end.kind, "rnntune.trials": json.dumps(end.counts)}
    if end.cause:
        tags[O.CAUSE_TAG] = end.cause[:5000]
    for k, v in tags.items():
        client.set_tag(parent, k, v)
    client.set_terminated(parent, O.PARENT_STATUS[end.kind])


def close_parent_anyway(client: MlflowClient, parent: str, end: O.Outcome, tracking) -> None:
    """`close_parent` on the way out of a failed job: a full disk releases the embedded store's
    reserve and tries again; any other error is printed, since the error the job is failing
    with, not this one, is its cause."""
    for attempt in (1, 2):
        try:
            close_parent(client, parent, end)
            return
        except Exception as closing:  # noqa: BLE001
            if attempt == 1 and disk_full(closing) and tracking.release_reserve():
                continue
            why = O.exception_line(f"{type(closing).__name__}: {closing}")
            print(f"rnntune: the parent run could not be closed: {why}", file=sys.stderr)
            return


def _ends(results, ends: dict[str, O.TrialEnd]) -> dict[str, O.TrialEnd]:
    """How every trial ended: as the tracking callback saw it (Tune's own trial status, with
    the exception), else from the result grid (a trial no callback saw end)."""
    out = dict(ends)
    for r in results:
        folder = Path(r.path).name if r.path else f"trial-{len(out)}"  # holds the trial id
        if any(trial_id in folder for trial_id in ends):
            continue
        error = O.exception_line(str(r.error)) if r.error else ""
        out[folder] = O.TrialEnd(O.ERROR if error else O.COMPLETED, error)
    return out


def _end_of(result, ends: dict[str, O.TrialEnd]) -> str | None:
    """How the trial behind a Tune result ended (keys: trial ids, or folder names)."""
    trial_id = str((result.metrics or {}).get("trial_id", ""))
    folder = Path(result.path).name if result.path else ""
    for key, end in ends.items():
        if key == trial_id or (folder and key in folder) or (trial_id and trial_id in key):
            return end.end
    return None


def _refit(best, ckpt: Path, metric: str, mode: str, out: Path) -> tuple[Path, str]:
    """A cross-validated winner refit on all training data (tune/final.py); others as they are."""
    epoch, _ = report.best_epoch(best.metrics_dataframe, metric, mode)
    refitted = refit(ckpt, epoch, out)
    if refitted is None:
        return ckpt, ""
    refit_ckpt, refit_spec = refitted
    what = f"refit on all training sequences for {refit_spec.trainer.max_epochs} epochs"
    print(f"rnntune: {what}")
    return refit_ckpt, what


def _importance(job: OpenJob, results, folder: Path):
    """fANOVA importances, logged to the parent run; None when too few trials measured."""
    try:
        found = importances(job.spec, results)
    except Exception as e:  # noqa: BLE001 - a summary statistic never fails the job
        logger.warning("hyperparameter importance not computed: %s", e)
        return None
    if found is not None:
        log_importance(job.client, job.parent, found, job.spec.monitor[0], folder)
    return found
