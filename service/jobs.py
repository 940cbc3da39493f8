"""What the job routes do: validate and admit a spec, submit it, keep its status in sync with Ray."""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import ValidationError

from lightning_modules.config import validation_problems
from service.auth import Principal
from service.ceilings import ceiling_problems
from service.progress import Progress, job_progress
from service.ray_jobs import RayJobMissing, RayJobs, RayUnavailable
from service.settings import Settings
from service.store import ACTIVE, FAILED, PENDING, STOPPED, Job, JobStore, OverQuota
from tune.policy import PolicyViolation
from tune.space import trial_count
from tune.spec import JobSpec, new_job_id

log = logging.getLogger("rnntune.service")


class SpecInvalid(ValueError):
    """The spec does not validate; `problems` are (field, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))
        self.problems = problems


class QuotaExceeded(PermissionError):
    """The caller's limits forbid this job (the message names the limit)."""


class JobNotFound(LookupError):
    pass


@dataclass
class Synced:
    """A job as the store has it after a refresh; `stale` says which source did not answer."""

    job: Job
    stale: str | None = None


@dataclass
class JobService:
    settings: Settings
    store: JobStore
    ray: RayJobs
    # Calls to Ray and MLflow run here, so a request waits at most `dependency_timeout_s` for
    # each: a dependency that hangs or retries for a minute never holds a status read.
    calls: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="dependency")
    )
    # job id -> (when its last refresh started, what it found stale): reads of one job within
    # `refresh_interval_s` share that refresh instead of each asking Ray and MLflow again
    _refreshed: dict[str, tuple[float, str | None]] = field(default_factory=dict)
    _refreshed_lock: threading.Lock = field(default_factory=threading.Lock)

    def bounded(self, fn, *args):
        """`fn(*args)` within the settings' dependency timeout; TimeoutError if it takes longer
        (it finishes in the background, and a later read gets its result)."""
        return self.calls.submit(fn, *args).result(timeout=self.settings.dependency_timeout_s)

    def admit(self, raw: object, caller: Principal) -> JobSpec:
        """A validated spec with the service's defaults filled in, within the caller's quotas."""
        if not isinstance(raw, dict):
            raise SpecInvalid([("", "the body must be a job spec: a mapping of sections")])
        try:
            spec = JobSpec.model_validate(raw)
        except ValidationError as e:
            raise SpecInvalid(validation_problems(e, JobSpec)) from None
        spec = self._with_service_defaults(spec)
        try:
            self.settings.policy().check(spec, on_cluster=False)  # decided from the text alone
        except PolicyViolation as e:
            raise SpecInvalid(e.problems) from None
        s = self.settings
        r = spec.resources
        limits = [
            ("trials per job", trial_count(spec), s.max_trials_per_job),
            ("CPUs per trial (workers x cpus)", r.workers * r.cpus, s.max_cpus_per_trial),
            ("GPUs per trial (workers x gpus)", r.workers * r.gpus, s.max_gpus_per_trial),
            ("driver CPUs", r.driver_cpus, s.max_driver_cpus),
            ("driver GPUs", r.driver_gpus, s.max_driver_gpus),
        ]
        for what, asked, limit in limits:
            if asked > limit:
                raise QuotaExceeded(f"quota: {asked:g} {what} asked, the limit is {limit:g}")
        problems = ceiling_problems(spec, s)
        if problems:
            raise SpecInvalid(problems)
        return spec

    def _with_service_defaults(self, spec: JobSpec) -> JobSpec:
        storage, tracking = spec.storage, spec.tracking
        if "url" not in storage.model_fields_set:
            storage = storage.model_copy(update={"url": self.settings.storage_url})
        elif "://" not in storage.url and not storage.url.startswith("/"):
            # Relative to the service's storage root: the job's working directory on the cluster
            # is temporary, so a relative folder there would lose every checkpoint.
            relative = posixpath.normpath(storage.url)
            if relative.startswith(".."):
                raise SpecInvalid(
                    [("storage.url", "a relative path may not leave the storage root")]
                )
            root = self.settings.storage_url.rstrip("/")
            storage = storage.model_copy(update={"url": f"{root}/{relative}"})
        if tracking.uri is None:
            tracking = tracking.model_copy(update={"uri": self.settings.tracking_uri})
        update = {"storage": storage, "tracking": tracking}
        if trial_count(spec) is None:  # until the budget is spent: within the service's cap
            one = spec.model_copy(
                update={"search": spec.search.model_copy(update={"num_samples": 1})}
            )
            samples = max(1, self.settings.max_trials_per_job // (trial_count(one) or 1))
            update["search"] = spec.search.model_copy(update={"num_samples": samples})
        return spec.model_copy(update=update)

    def submit(self, spec: JobSpec, caller: Principal) -> Job:
        """Stores the job first, within the caller's quota of active jobs (checked and stored in
        one transaction), then submits it: nothing is lost if Ray refuses."""
        job = self._store_within_quota(
            Job(
                id=new_job_id(spec),
                owner=caller.user,
                name=spec.name,
                # What the spec set, not its defaults: the driver sizes the defaults left out
                # to the data (tune/protocol.py)
                spec=spec.model_dump(mode="json", exclude_unset=True),
                metric=spec.monitor[0],
                mode=spec.monitor[1],
                tracking_uri=spec.tracking.uri or self.settings.tracking_uri,
                experiment=spec.tracking.experiment or spec.name,
                status=PENDING,
                trials={},
            ),
            caller,
        )
        try:
            self.ray.submit(job.id, spec, caller.user)
        except Exception as e:
            self.store.update(job.id, status=FAILED, message=f"submission failed: {e}")
            raise
        return job

    def _store_within_quota(self, job: Job, caller: Principal) -> Job:
        limit = self.settings.max_concurrent_jobs
        try:
            return self.store.add_within_quota(job, limit)
        except OverQuota as e:
            raise QuotaExceeded(
                f"quota: {caller.user} has {e.active} active jobs, the limit is {limit}"
            ) from None

    def visible(self, job_id: str, caller: Principal) -> Job:
        """The job if the caller may see it; another user's job is indistinguishable from none."""
        job = self.store.get(job_id)
        if job is None or not (caller.is_admin or job.owner == caller.user):
            raise JobNotFound(job_id)
        return job

    def sync(self, job: Job, force: bool = False) -> Synced:
        """Status from Ray while the job is active; progress from MLflow until it is final.

        Both are asked at once and waited for `dependency_timeout_s` in all; either may be
        down, and the job is then answered as last known, with `stale` saying which.
        """
        if not force and (recent := self._recent_refresh(job.id)) is not None:
            return Synced(job, recent[1])

        deadline = time.monotonic() + self.settings.dependency_timeout_s
        asks_ray = job.status in ACTIVE
        # Only the service's own MLflow is ever queried: a URI from a spec is never opened here.
        asks_mlflow = not job.progress_final and job.tracking_uri == self.settings.tracking_uri
        ray = self.calls.submit(self.ray.status, job.id) if asks_ray else None
        progress = (
            self.calls.submit(
                job_progress,
                job.tracking_uri,
                job.experiment,
                job.metric,
                job.mode,
                job.id,
                job.experiment_id,
            )
            if asks_mlflow
            else None
        )
        updates: dict = {}
        stale: list[str] = []
        if ray is not None:
            self._take_ray_answer(job, ray, deadline, updates, stale)
        if progress is not None:
            self._take_progress(job, progress, deadline, updates, stale)
        for problem in stale:
            log.warning("job %s not refreshed: %s", job.id, problem)
        if updates:
            job = self.store.update(job.id, **updates)
        reason = "; ".join(stale) or None
        with self._refreshed_lock:
            self._refreshed[job.id] = (self._refreshed.get(job.id, (0.0, None))[0], reason)
        return Synced(job, reason)

    def _take_ray_answer(self, job: Job, ray, deadline: float, updates: dict, stale: list) -> None:
        """Ray's status of the job into `updates`, or why it is stale into `stale`."""
        try:
            status, message = ray.result(timeout=max(0.0, deadline - time.monotonic()))
            updates.update(status=status, message=message)
        except RayJobMissing:
            if job.status == PENDING and _age_s(job) < self.settings.submission_grace_s:
                # Another replica may be submitting it this moment (stored first, then
                # submitted): not failed yet.
                stale.append("Ray: not submitted yet")
            else:
                updates.update(status=FAILED, message="the Ray cluster has no record of this job")
        except RayUnavailable as e:
            stale.append(f"Ray: {e}")
        except TimeoutError:
            stale.append(f"Ray: {self._no_answer()}")

    def _take_progress(
        self, job: Job, progress, deadline: float, updates: dict, stale: list
    ) -> None:
        """MLflow's progress of the job into `updates`, or why it is stale into `stale`."""
        try:
            p = progress.result(timeout=max(0.0, deadline - time.monotonic()))
            updates.update(_progress_fields(p, job.status))
        except TimeoutError:
            stale.append(f"MLflow: {self._no_answer()}")
            # A slow answer still lands in the store when it comes: the next read has it.
            progress.add_done_callback(self._late_progress(job.id, job.status))
        except Exception as e:  # noqa: BLE001 - MLflow down must not fail a status read
            stale.append(f"MLflow: {str(e).strip().splitlines()[-1][:200] if str(e) else e}")

    def _no_answer(self) -> str:
        return f"no answer within {self.settings.dependency_timeout_s:g} s"

    def _recent_refresh(self, job_id: str) -> tuple[float, str | None] | None:
        """The job's last refresh if it started within `refresh_interval_s`; else None, and
        this call's refresh is recorded as started now."""
        now = time.monotonic()
        with self._refreshed_lock:
            last = self._refreshed.get(job_id)
            if last is not None and now - last[0] < self.settings.refresh_interval_s:
                return last
            if len(self._refreshed) > 10_000:  # ended jobs' entries are never read again
                self._refreshed.clear()
            self._refreshed[job_id] = (now, last[1] if last else None)
            return None

    def _late_progress(self, job_id: str, status: str):
        def land(future) -> None:
            if future.exception() is None:
                try:
                    self.store.update(job_id, **_progress_fields(future.result(), status))
                except Exception as e:  # noqa: BLE001 - a background refresh must not raise
                    log.warning("job %s: a late MLflow answer was not stored: %s", job_id, e)

        return land

    def stop(self, job: Job) -> Job:
        """Asks Ray to stop an active job; a finished job is returned as it is (idempotent).

        A job Ray never started (no resources for its driver) stays PENDING there; it is
        STOPPED here at once, so it stops counting against its owner's quota.
        """
        if job.status in ACTIVE:
            try:
                self.ray.stop(job.id)
            except RayJobMissing:
                pass
        job = self.sync(job, force=True).job
        if job.status == PENDING:
            job = self.store.update(job.id, status=STOPPED, message="stopped before it started")
        return job

    def resync_active(self) -> int:
        """At start-up: refresh every job the store still thinks is active."""
        jobs = self.store.active()
        for job in jobs:
            self.sync(job)
        return len(jobs)


def _age_s(job: Job) -> float:
    created = job.created_at
    if created.tzinfo is None:  # SQLite keeps no time zone: stored as UTC
        created = created.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - created).total_seconds()


def _progress_fields(p: Progress, status: str) -> dict:
    return {
        "parent_run_id": p.parent_run_id,
        "experiment_id": p.experiment_id,
        "trials": p.trials,
        "best_metric": p.best_metric,
        "champion_decision": p.champion_decision,
        "outcome": p.outcome,
        "cause": p.cause,
        # Final only if read after the job ended: read alongside Ray's status, it may predate
        # the driver's last writes.
        "progress_final": int(status not in ACTIVE),
    }
