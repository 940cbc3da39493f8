"""The job driver: MLflow parent run, Ray Tune search, child runs, registration, summary.

`rnntune run SPEC` runs it with an embedded local Ray; `python -m tune run SPEC` (what the job
service submits) connects to the cluster in `RAY_ADDRESS`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow.fs
import ray
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune

from tune import outcome as O
from tune import report, schedulers
from tune.backfill import backfill
from tune.cluster import ensure_ray
from tune.compat import framework_settings, set_restored_callbacks
from tune.console import LiveView
from tune.final import refit
from tune.importance import Importance, importances, log_importance
from tune.parent_run import dataset_input, existing_trial_runs, open_parent_run
from tune.policy import Policy
from tune.protocol import adapt, read_plan, search_time_budget
from tune.registry import Lineage, Registration, claim_model_name, job_user, register_best
from tune.resume import ForgetMissingCheckpoints
from tune.spec import (
    JobSpec,
    new_job_id,
    parse_job_spec,
    searching_line,
    with_absolute_data_paths,
)
from tune.system_metrics import start_system_metrics
from tune.timing import JobClock, Timing, log_timing
from tune.tracking import open_ui_hint, setup_tracking
from tune.trial_logger import MlflowTrialLogger
from tune.trials import (
    CHECKPOINT_FILE,
    TRAIN_PLACEMENT_GROUP,
    TRAIN_RUN_PREFIX,
    run_ddp_trial,
    run_trial,
)
from tune.writer import disk_full

SPEC_FILE = "job_spec.json"
logger = logging.getLogger(__name__)


@dataclass
class Storage:
    path: str  # what RunConfig.storage_path takes
    filesystem: pyarrow.fs.FileSystem | None
    local_root: Path | None  # set when storage is a local folder
    fs: fsspec.AbstractFileSystem


def resolve_storage(url: str) -> Storage:
    """A local folder or any fsspec URL; non-local ones reach Tune through pyarrow's fsspec bridge."""
    if "://" not in url or url.startswith("file://"):
        root = Path(url.removeprefix("file://")).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        return Storage(str(root), None, root, fsspec.filesystem("file"))
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path, exist_ok=True)
    return Storage(path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), None, fs)


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


class ReleaseTrainRuns(ray_tune.Callback):
    """Frees what a multi-worker trial's Train run leaves behind when Tune stops the trial.

    Tune stops a trial (ASHA, PBT exploit) by ending its actor, which takes the Train controller
    and workers with it but not their placement group, and not the run's folder. Ray Train's own
    cleaner finds dead controllers through the dashboard's state API, which an embedded Ray has
    not: the group would keep the workers' CPUs/GPUs and later trials would wait forever.
    """

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial, folders=False)  # a restart: the last run's group, if still there

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial, folders=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial, folders=True)

    def _release(self, trial, folders: bool) -> None:
        try:  # best effort: an exception in a callback would end the whole search
            self._remove_placement_group(trial)
            if folders:
                self._remove_run_folders(trial)
        except Exception as e:  # noqa: BLE001
            logger.warning("could not release trial %s's Train run: %s", trial.trial_id, e)

    @staticmethod
    def _remove_placement_group(trial) -> None:
        from ray.util.placement_group import PlacementGroup

        group_id = (trial.last_result or {}).get(TRAIN_PLACEMENT_GROUP)
        if not group_id:
            return
        group = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(group_id)))
        if ray.util.placement_group_table(group).get("state") not in (None, "REMOVED"):
            ray.util.remove_placement_group(group)

    @staticmethod
    def _remove_run_folders(trial) -> None:
        storage = trial.storage
        fs = storage.storage_filesystem
        selector = pyarrow.fs.FileSelector(storage.trial_fs_path, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(
                TRAIN_RUN_PREFIX
            ):
                fs.delete_dir(info.path)


def _tuner(
    spec: JobSpec,
    job_id: str,
    storage: Storage,
    callbacks: list[ray_tune.Callback],
    resume: bool,
    verbose: bool,
    search_budget_s: float | None = None,
):
    """`callbacks`: the trial logger first (the live view reads what it recorded);
    `search_budget_s`: when the search stops sampling and stops its running trials."""
    callbacks = list(callbacks)
    if spec.resources.workers > 1:
        callbacks.append(ReleaseTrainRuns())
    fn = run_ddp_trial if spec.resources.workers > 1 else run_trial
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(fn, job=spec.model_dump(mode="json")),
        schedulers.trial_resources(spec),
    )
    if resume:
        path = f"{storage.path}/{job_id}"
        tuner = ray_tune.Tuner.restore(
            path if storage.filesystem else str(Path(storage.path) / job_id),
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=storage.filesystem,
        )
        # The restored run config carries a pickled callback; use the one rebuilt from MLflow.
        set_restored_callbacks(tuner, [ForgetMissingCheckpoints(), *callbacks])
        return tuner
    metric, mode = spec.monitor
    space = (
        schedulers.pbt_initial_space(spec)
        if spec.scheduler.name == "pbt"
        else schedulers.param_space(spec)
    )
    return ray_tune.Tuner(
        trainable,
        param_space=space,
        tune_config=ray_tune.TuneConfig(
            metric=metric,
            mode=mode,
            scheduler=schedulers.scheduler(spec),
            # Tune's max_concurrent_trials ignores a BasicVariantGenerator: the searcher limits.
            search_alg=schedulers.search_algorithm(
                spec, schedulers.concurrency_limit(spec, ray.cluster_resources())
            ),
            num_samples=spec.samples,  # -1: until the time budget is spent
            time_budget_s=search_budget_s,
            # A new trial skips the worker start and torch/Lightning imports. Not for multi-worker
            # trials: a stopped one is still in `fit()`, and only ending its actor ends the run.
            reuse_actors=spec.resources.workers == 1,
        ),
        run_config=ray_tune.RunConfig(
            name=job_id,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            checkpoint_config=_checkpoint_config(spec),
            failure_config=ray_tune.FailureConfig(max_failures=spec.storage.max_failures),
            callbacks=callbacks,
            verbose=1 if verbose else 0,  # 0: tune/console.py's live view instead of Tune's
        ),
    )


def _checkpoint_config(spec: JobSpec) -> ray_tune.CheckpointConfig:
    """Keep the best K by the job's metric; under PBT the latest K (exploits copy the latest)."""
    metric, mode = spec.monitor
    if spec.scheduler.name == "pbt":
        return ray_tune.CheckpointConfig(num_to_keep=max(4, spec.storage.keep_checkpoints))
    return ray_tune.CheckpointConfig(
        num_to_keep=spec.storage.keep_checkpoints,
        checkpoint_score_attribute=metric,
        checkpoint_score_order=mode,
    )


MISSING_CHECKPOINT_TAG = "rnntune.best_checkpoint_missing"
STOP_DRAIN_S = 30.0  # a stopped or crashed job waits this long for MLflow to take its last writes


def _best_checkpoint(results, metric: str, mode: str, dest: Path):
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


def run_job(
    spec: JobSpec,
    job_id: str | None = None,
    resume: bool = False,
    verbose: bool = False,
    started_at: float | None = None,
) -> JobSummary:
    """Run (or resume) a search job end to end; returns what the summary prints. `verbose`:
    Tune's own trial tables instead of the live view (tune/console.py). `started_at`: when the
    job started (`time.time()`; default now), what `budget.time_budget_s` counts from."""
    clock = JobClock(started=started_at or time.time())
    clock.phases["imports"] = clock.elapsed()  # the process's start to here
    job_id = job_id or new_job_id(spec)
    spec = with_absolute_data_paths(spec)
    framework_settings(verbose)
    policy = Policy.configured()
    if policy is not None:  # on a cluster: whatever the spec came through, before touching it
        policy.check(spec, on_cluster=True)
    with clock.phase("tracking"):  # the store opened, the model name claimed
        storage = resolve_storage(spec.storage.url)
        tracking = setup_tracking(spec, storage.local_root)
        client = MlflowClient(tracking.uri)
        if spec.registry.enabled:  # another user's model name fails now, not after the search
            claim_model_name(client, spec.registry.model_name or spec.name, job_user())
    with clock.phase("data"):
        plan = read_plan(spec)  # unusable data fails here, in one line, before any trial
        spec, protocol = adapt(spec, plan)  # data-sized defaults, where the spec left them out
        dataset = dataset_input(spec)
    with clock.phase("parent_run"):
        parent = open_parent_run(client, tracking, spec, job_id, dataset)
    storage.fs.makedirs(f"{storage.path}/{job_id}", exist_ok=True)
    with storage.fs.open(f"{storage.path}/{job_id}/{SPEC_FILE}", "w") as f:
        f.write(json.dumps(spec.model_dump(mode="json")))
    callback = MlflowTrialLogger(
        tracking, spec, job_id, parent, existing_trial_runs(client, tracking, parent), dataset
    )
    notes = spec.ignored_settings()  # said once, by name, and kept on the parent run
    for note in notes:
        print(f"rnntune: note: {note}", file=sys.stderr)
    if notes:
        client.set_tag(parent, "rnntune.ignored_settings", "\n".join(notes)[:5000])
    said = [*protocol.notes, searching_line(spec)]
    for line in said:  # the job's own console output (stderr is for what went wrong)
        print(f"rnntune: {line}", file=sys.stderr if line.startswith("warning") else sys.stdout)
    client.set_tag(parent, "rnntune.protocol", "\n".join(said)[:5000])
    if plan is not None:
        client.log_param(parent, "validation", plan.describe().split(":")[0][:500])
    with clock.phase("ray_start"):
        ensure_ray(log_level=logging.INFO if verbose else logging.WARNING)
    search_budget = search_time_budget(spec, clock.elapsed())
    live = None if verbose else LiveView(spec, callback, search_budget_s=search_budget)
    system = start_system_metrics(client, parent, callback.writer.submit)
    searching = True
    try:
        callbacks = [callback, *([live] if live else [])]
        tuner = _tuner(spec, job_id, storage, callbacks, resume, verbose, search_budget)
        # What registering the winner needs (torch, Lightning), imported while the trials run:
        # the job's start did not wait for it (tune.trials), and its end will not either
        threading.Thread(target=_import_training_stack, daemon=True).start()
        clock.search_start = time.time()
        with clock.phase("search"):
            results = tuner.fit()
        clock.search_end = time.time()
        searching = False
        system.stop()
        if live:
            live.close()
        # A trial still running when a budgeted search returns was cut by the budget (Tune
        # scores it as it was); waits for MLflow if it is down: every write delivered
        with clock.phase("close_runs"):
            if search_budget is not None:
                callback.close_unfinished(stopped_by="time budget", end=O.BUDGET_STOPPED)
            else:
                callback.close_unfinished()
        if resume and (
            n := backfill(callback.client, callback.runs, spec, results)
        ):  # what the killed driver never sent
            print(f"rnntune: logged {n} metric points the interrupted driver had not sent")
        lost = callback.writer.lost + len(callback.writer.parked)
        summary = _finish(
            spec,
            job_id,
            tracking,
            client,
            parent,
            results,
            callback.ends,
            callback.runs,
            clock,
            lost,
        )
        summary.timing = clock.split(search_budget, spec, len(results))
        log_timing(client, parent, summary.timing)
        return summary
    except BaseException as e:  # stopped (SIGTERM from `rnntune cancel`, Ctrl-C) or crashed,
        # in the search or after it (testing, registering): the runs end with the cause
        stopped = isinstance(e, KeyboardInterrupt | SystemExit)
        system.stop(wait=0)  # a stopped job's seconds are for closing its runs
        try:
            callback.close_unfinished(
                stopped_by="job stopped" if stopped else "job failed", timeout=STOP_DRAIN_S
            )
        finally:
            error = O.exception_line(f"{type(e).__name__}: {e}")
            # Tune itself broke after trials had failed (it cannot read back what a full disk
            # truncated): the trials' failure is the first cause, Tune's error a consequence
            consequence = searching and not stopped and O.first_failure(callback.ends)
            cause = "" if stopped else ("" if consequence else error)
            end = O.decide(callback.ends, usable=False, stopped=stopped, cause=cause)
            _close_parent_anyway(client, parent, end, tracking)
            print(end.line(), flush=True)
        if consequence:
            raise O.JobFailed(f"then the search itself failed: {error}") from e
        if stopped:  # our SIGTERM handler's exit code does not survive Ray's C++ calls
            raise SystemExit(O.EXIT_CODE[O.STOPPED]) from e  # (it re-raises SystemExit(1))
        raise


def _import_training_stack() -> None:
    import deploy.bundle.pyfunc  # noqa: F401
    import lightning_modules.training  # noqa: F401


def _close_parent_anyway(client: MlflowClient, parent: str, end: O.Outcome, tracking) -> None:
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


def close_parent(client: MlflowClient, parent: str, end: O.Outcome) -> None:
    """The parent run says the job's outcome: status, outcome and first-cause tags."""
    tags = {O.OUTCOME_TAG: end.kind, "rnntune.trials": json.dumps(end.counts)}
    if end.cause:
        tags[O.CAUSE_TAG] = end.cause[:5000]
    for k, v in tags.items():
        client.set_tag(parent, k, v)
    client.set_terminated(parent, O.PARENT_STATUS[end.kind])


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


def _finish(
    spec: JobSpec,
    job_id: str,
    tracking,
    client: MlflowClient,
    parent: str,
    results,
    ends: dict[str, O.TrialEnd],
    runs: dict[str, str],
    clock: JobClock,
    tracking_lost: int = 0,
) -> JobSummary:
    metric, mode = spec.monitor
    ends = _ends(results, ends)
    rows = report.trial_rows(spec, results, ends)
    table = report.cell_table(rows, metric, mode)
    registration, best_config, best_value, importance = None, {}, None, None
    with tempfile.TemporaryDirectory() as tmp:
        with clock.phase("figures"):
            if rows:
                report.comparison_figure(spec, rows, metric, mode, Path(tmp) / "comparison.png")
                client.log_artifact(parent, str(Path(tmp) / "comparison.png"))
                client.log_text(parent, table, "cell_types.md")
        with clock.phase("importance"):
            importance = _importance(spec, results, client, parent, Path(tmp))
        # A trial that raised (its storage full or read-only, a bug) is not a model to ship,
        # whatever it measured before: only trials that ended well are candidates.
        healthy = [r for r in results if _end_of(r, ends) not in O.FAILED_ENDS]
        with clock.phase("checkpoint"):
            best, ckpt, ckpt_uri, missing = _best_checkpoint(
                healthy, metric, mode, Path(tmp) / "best"
            )
        if missing:  # a better trial is not the one registered (or none is): say why
            client.set_tag(parent, MISSING_CHECKPOINT_TAG, "; ".join(missing)[:5000])
        if best is not None:
            best_config = dict(best.config)
            best_value = report.best_value(best.metrics_dataframe, metric, mode)
            if spec.registry.enabled:
                trial_id = str(best.metrics.get("trial_id", ""))
                final = ""
                if spec.registry.final_model == "refit":
                    with clock.phase("refit"):
                        ckpt, final = _refit(best, ckpt, metric, mode, Path(tmp) / "refit")
                with clock.phase("registration"):  # the test split, the model, its aliases
                    registration = register_best(
                        spec,
                        job_id,
                        parent,
                        tracking.uri,
                        ckpt,
                        lineage=Lineage(runs.get(trial_id), trial_id, ckpt_uri, final),
                    )
    if best_value is not None:
        client.log_metric(parent, f"best_{metric}", best_value)
    if tracking_lost:
        client.set_tag(parent, "rnntune.tracking_writes_lost", str(tracking_lost))
    lost = "" if best is not None or not missing else "no checkpoint left: " + missing[0]
    end = O.decide(ends, usable=best_value is not None, stopped=False, cause=lost)
    close_parent(client, parent, end)
    summary = JobSummary(
        job_id=job_id,
        parent_run_id=parent,
        tracking_uri=tracking.uri,
        ui_command=open_ui_hint(spec, tracking, job_id, parent),
        outcome=end,
        best_config=best_config,
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


def _importance(spec: JobSpec, results, client: MlflowClient, parent: str, folder: Path):
    """fANOVA importances, logged to the parent run; None when too few trials measured."""
    try:
        found = importances(spec, results)
    except Exception as e:  # noqa: BLE001 - a summary statistic never fails the job
        logger.warning("hyperparameter importance not computed: %s", e)
        return None
    if found is not None:
        log_importance(client, parent, found, spec.monitor[0], folder)
    return found


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


def load_stored_spec(storage_url: str, job_id: str) -> JobSpec:
    """The spec a job was started with (saved next to its Tune state), for `resume`."""
    storage = resolve_storage(storage_url)
    try:
        with storage.fs.open(f"{storage.path}/{job_id}/{SPEC_FILE}") as f:
            return parse_job_spec(json.loads(f.read()), f"{job_id}/{SPEC_FILE}")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"job_id: no job {job_id!r} in {storage_url} (no {job_id}/{SPEC_FILE} there); pass "
            "--storage with the storage.url the job ran with"
        ) from None


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
