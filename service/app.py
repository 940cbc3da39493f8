"""The job service's FastAPI application: `uvicorn --factory service.app:create_app`.

Nothing happens at import: `create_app` reads the settings, and start-up loads the tokens (refusing
to start without safe ones), opens the job store and re-syncs unfinished jobs from Ray.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from service.api.routes import health, jobs, models
from service.auth import TokenTable, load_tokens
from service.jobs import JobNotFound, JobService, QuotaExceeded, SpecInvalid
from service.ray_jobs import RayJobMissing, RayJobs, RayUnavailable
from service.settings import Settings
from service.store import JobStore
from tune.spec import JobSpec

log = logging.getLogger("rnntune.service")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    tokens = TokenTable(load_tokens(settings))  # refuses to build an app without safe tokens

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The service only reads MLflow, inside requests: a short timeout and few retries
        # (MLflow's defaults retry for minutes), unless the operator set them.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        store = JobStore(settings.database_url, settings.dependency_timeout_s)
        token = settings.ray_auth_token.get_secret_value() if settings.ray_auth_token else None
        ray = RayJobs(settings.ray_address, settings.cluster_python, token)
        app.state.jobs = JobService(settings, store, ray)
        threading.Thread(target=_resync, args=(app.state.jobs,), daemon=True).start()
        yield
        store.close()

    app = FastAPI(
        title="rnntune job service",
        summary="Submit RNN/LSTM/GRU search jobs to a Ray cluster; follow them; promote models.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.tokens = tokens
    app.include_router(jobs.router)
    app.include_router(jobs.schema_router)
    app.include_router(models.router)
    app.include_router(health.router)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app)
    return app


def _resync(service: JobService) -> None:
    try:
        n = service.resync_active()
        log.info("re-synced %d unfinished jobs from Ray", n)
    except Exception as e:  # noqa: BLE001 - a start-up best effort; reads sync again
        log.warning("start-up re-sync failed: %s", e)


def _error(status: int, detail: str, errors: list[dict] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": errors or []}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpecInvalid)
    async def spec_invalid(_: Request, e: SpecInvalid):
        errors = [{"field": f, "message": m} for f, m in e.problems]
        return _error(422, "invalid job spec", errors)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, e: RequestValidationError):
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in e.errors()
        ]
        return _error(422, "invalid request", errors)

    @app.exception_handler(QuotaExceeded)
    async def quota(_: Request, e: QuotaExceeded):
        return _error(403, str(e))

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, e: JobNotFound):
        return _error(404, f"no job {e}")

    @app.exception_handler(RayJobMissing)
    async def ray_missing(_: Request, e: RayJobMissing):
        return _error(404, f"Ray has no record of it: {e}")

    @app.exception_handler(RayUnavailable)
    async def ray_down(_: Request, e: RayUnavailable):
        return _error(503, str(e))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def store_down(_: Request, e: OperationalError | InterfaceError):
        reason = str(e.orig if e.orig is not None else e).strip().splitlines()[0][:200]
        return _error(503, f"job store unavailable: {reason}")

    from mlflow.exceptions import MlflowException

    @app.exception_handler(MlflowException)
    async def mlflow_error(_: Request, e: MlflowException):
        code = {"RESOURCE_DOES_NOT_EXIST": 404, "INVALID_PARAMETER_VALUE": 422}
        return _error(code.get(e.error_code, 502), f"MLflow: {e.message}")


class BodyLimit:
    """Answers 413 to request bodies over `max_bytes`, whether or not they declare a length."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _error(413, f"body over {self.max_bytes} bytes")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"body over {self.max_bytes} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document plus the job spec's schema, which `POST /jobs` refers to."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
    spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.update(spec_schema.pop("$defs", {}))
    components["JobSpec"] = spec_schema
    app.openapi_schema = doc
    return doc
