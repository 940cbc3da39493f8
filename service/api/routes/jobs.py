"""`/jobs`: submit, list, inspect, follow and stop search jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from lightning_modules.documents import DocumentError, load_json, load_yaml
from service.api.deps import CallerDep, JobsDep, SettingsDep
from service.api.schemas import ErrorBody, JobOut, JobPage, JobStatus
from service.jobs import SpecInvalid, Synced
from service.store import ACTIVE
from tune.spec import JobSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
_ERRORS = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody, "description": "over quota"},
    404: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody, "description": "invalid spec: one entry per field"},
    503: {"model": ErrorBody, "description": "the Ray cluster is unreachable"},
}


def _parse_body(body: bytes, content_type: str) -> object:
    """JSON or YAML with bounded nesting, no duplicate keys and numbers a float can hold."""
    try:
        text = body.decode("utf-8")
        if content_type.split(";")[0].strip().lower() in YAML_TYPES:
            return load_yaml(text)
        return load_json(text)
    except UnicodeDecodeError:
        raise SpecInvalid([("body", "not UTF-8 text")]) from None
    except DocumentError as e:
        raise SpecInvalid([("body", str(e))]) from None


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses=_ERRORS,
    openapi_extra=_SPEC_BODY,
)
async def submit_job(request: Request, jobs: JobsDep, caller: CallerDep, settings: SettingsDep):
    """Validate a job spec (JSON or YAML), store the job and submit it to the Ray cluster."""
    raw = _parse_body(await request.body(), request.headers.get("content-type", ""))
    spec = await run_in_threadpool(jobs.admit, raw, caller)
    job = await run_in_threadpool(jobs.submit, spec, caller)
    return JobOut.of(job, settings.ui_base)


@router.get("", response_model=JobPage, responses=_ERRORS)
def list_jobs(
    jobs: JobsDep,
    caller: CallerDep,
    settings: SettingsDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
):
    """The caller's jobs (an admin's: everyone's), newest first; active ones refreshed from Ray."""
    owner = None if caller.is_admin else caller.user
    rows, total = jobs.store.list(owner, status_, limit, offset)
    synced = [jobs.sync(j) if j.status in ACTIVE else Synced(j) for j in rows]
    return JobPage(
        items=[JobOut.of(s.job, settings.ui_base, s.stale) for s in synced],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{job_id}", response_model=JobOut, responses=_ERRORS)
def get_job(job_id: str, jobs: JobsDep, caller: CallerDep, settings: SettingsDep):
    """Status (synced from Ray), trials by state, best metric, MLflow run and champion decision."""
    synced = jobs.sync(jobs.visible(job_id, caller))
    return JobOut.of(synced.job, settings.ui_base, synced.stale)


@router.delete("/{job_id}", response_model=JobOut, responses=_ERRORS)
def stop_job(job_id: str, jobs: JobsDep, caller: CallerDep, settings: SettingsDep):
    """Stop a job; stopping a finished job changes nothing (idempotent)."""
    return JobOut.of(jobs.stop(jobs.visible(job_id, caller)), settings.ui_base)


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={**_ERRORS, 200: {"content": {"text/plain": {}}}},
)
def job_logs(
    job_id: str,
    jobs: JobsDep,
    caller: CallerDep,
    tail: Annotated[int, Query(ge=0, le=100_000, description="last N lines; 0: all")] = 200,
    follow: bool = False,
):
    """The driver's log: the last `tail` lines, or with `follow` a stream until the job ends."""
    job = jobs.visible(job_id, caller)
    if follow:
        return StreamingResponse(jobs.ray.follow(job.id), media_type="text/plain")
    lines = jobs.ray.logs(job.id).splitlines(keepends=True)
    return PlainTextResponse("".join(lines[-tail:] if tail else lines))


schema_router = APIRouter(tags=["schema"])


@schema_router.get("/schema")
def job_schema() -> dict:
    """The job spec's JSON schema: what `POST /jobs` accepts."""
    return JobSpec.model_json_schema()
