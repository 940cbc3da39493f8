"""The Ray Tune search of a job: its Tuner (new or restored), checkpoints kept, Train cleanup."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs
import ray
from ray import tune as ray_tune

from tune import schedulers
from tune.compat import set_restored_callbacks
from tune.resume import ForgetMissingCheckpoints
from tune.spec import JobSpec
from tune.storage import Storage
from tune.trials import TRAIN_PLACEMENT_GROUP, TRAIN_RUN_PREFIX, run_ddp_trial, run_trial

logger = logging.getLogger(__name__)


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


def build_tuner(
    spec: JobSpec,
    job_id: str,
    storage: Storage,
    callbacks: list[ray_tune.Callback],
    resume: bool,
    verbose: bool,
    search_budget_s: float | None = None,
) -> ray_tune.Tuner:
    """`callbacks`: the trial logger first (the live view reads what it recorded);
    `search_budget_s`: when the search stops sampling and stops its running trials."""
    callbacks = [*callbacks, *_result_files()]
    if spec.resources.workers > 1:
        callbacks.append(ReleaseTrainRuns())
    fn = run_ddp_trial if spec.resources.workers > 1 else run_trial
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(fn, job=spec.model_dump(mode="json")),
        schedulers.trial_resources(spec),
    )
    if resume:
        return _restored(trainable, job_id, storage, callbacks)
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


def _result_files() -> list[ray_tune.Callback]:
    """Tune's per-trial result files: result.json (what a resume backfills MLflow from) and
    progress.csv, without its TensorBoard logger, whose import (tensorboardX, boto3) took ~1.8 s
    of the driver's CPU at each search's start, while the first trials trained. Tune adds none of
    the three itself (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, tune.compat.framework_settings)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _restored(trainable, job_id: str, storage: Storage, callbacks: list) -> ray_tune.Tuner:
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
