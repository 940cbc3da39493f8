"""Response bodies of the REST API (they feed the OpenAPI document)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from service.store import Job, JobStatus
from tune.outcome import run_url


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[FieldError] = []


class JobOut(BaseModel):
    id: str
    name: str
    owner: str
    status: JobStatus
    message: str = ""
    created_at: dt.datetime
    updated_at: dt.datetime
    trials: dict[str, int] = Field(
        description="trials by state: running, completed, early_stopped, diverged, error, "
        "interrupted"
    )
    metric: str
    mode: Literal["min", "max"]
    best_metric: float | None = Field(description="best validation metric so far")
    mlflow_run_id: str | None = Field(description="the job's MLflow parent run")
    mlflow_url: str | None
    champion_decision: str | None
    outcome: str | None = Field(
        None,
        description="the driver's verdict once the job ended: succeeded, "
        "succeeded_with_failed_trials, failed or stopped",
    )
    cause: str | None = Field(None, description="the first real cause of a failure, one line")
    stale: bool = Field(False, description="Ray or MLflow did not answer: as last known")
    stale_reason: str | None = Field(None, description="which dependency did not answer, why")

    @classmethod
    def of(cls, job: Job, ui_base: str | None, stale: str | None = None) -> JobOut:
        url = None
        if ui_base and job.parent_run_id and job.experiment_id:
            url = run_url(ui_base, job.experiment_id, job.parent_run_id)
        return cls(
            id=job.id,
            name=job.name,
            owner=job.owner,
            status=job.status,  # type: ignore[arg-type]
            message=job.message or "",
            created_at=job.created_at,
            updated_at=job.updated_at,
            trials=job.trials or {},
            metric=job.metric,
            mode=job.mode,  # type: ignore[arg-type]
            best_metric=job.best_metric,
            mlflow_run_id=job.parent_run_id,
            mlflow_url=url,
            champion_decision=job.champion_decision,
            outcome=job.outcome,
            cause=job.cause,
            stale=stale is not None,
            stale_reason=stale,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelVersionOut(BaseModel):
    version: str
    aliases: list[str]
    run_id: str | None
    status: str
    metrics: dict[str, str] = Field(description="test metrics and job tags of the version")


class ModelOut(BaseModel):
    name: str
    aliases: dict[str, str]
    versions: list[ModelVersionOut] = []


class AliasIn(BaseModel):
    alias: str = Field("champion", pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    version: str = Field(pattern=r"^[1-9][0-9]{0,8}$")
