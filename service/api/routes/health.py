"""`/healthz` (the process answers) and `/readyz` (Ray and MLflow are reachable)."""

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


@router.get("/readyz", responses={503: {"description": "Ray or MLflow unreachable"}})
def readyz(settings: SettingsDep, jobs: JobsDep):
    """Readiness: the Ray Jobs API and the MLflow tracking server both answer."""
    checks: dict[str, str] = {}
    try:
        jobs.ray.ping()
        checks["ray"] = "ok"
    except Exception as e:  # noqa: BLE001 - report, don't raise
        checks["ray"] = f"unreachable: {e}"
    try:
        uri = settings.tracking_uri
        if uri.startswith(("http://", "https://")):
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                pass
        else:
            MlflowClient(uri).search_experiments(max_results=1)
        checks["mlflow"] = "ok"
    except Exception as e:  # noqa: BLE001
        checks["mlflow"] = f"unreachable: {e}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)
