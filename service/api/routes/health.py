"""`/healthz` (the process answers) and `/readyz` (the job store, Ray and MLflow answer)."""

from __future__ import annotations

import urllib.request

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from mlflow.tracking import MlflowClient

from service.api.deps import JobsDep, SettingsDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """Liveness: the service process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the job store, Ray or MLflow unreachable"}})
def readyz(settings: SettingsDep, jobs: JobsDep):
    """Readiness: the job store's database, the Ray Jobs API and the MLflow tracking server all
    answer (each within the dependency timeout); the body names the one that does not."""
    checks = {
        "database": _check(jobs, jobs.store.ping),
        "ray": _check(jobs, jobs.ray.ping),
        "mlflow": _check(jobs, _ping_mlflow, settings),
    }
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


def _check(jobs, fn, *args) -> str:
    try:
        jobs.bounded(fn, *args)
        return "ok"
    except TimeoutError:
        return f"unreachable: no answer within {jobs.settings.dependency_timeout_s:g} s"
    except Exception as e:  # noqa: BLE001 - report, don't raise
        return f"unreachable: {e}"


def _ping_mlflow(settings) -> None:
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        timeout = settings.dependency_timeout_s
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    else:
        MlflowClient(uri).search_experiments(max_results=1)
