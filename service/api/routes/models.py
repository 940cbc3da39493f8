"""`/models`: the MLflow model registry's models, versions, aliases and metrics; promotion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from mlflow.tracking import MlflowClient

from service.api.deps import AdminDep, CallerDep, SettingsDep
from service.api.schemas import AliasIn, ErrorBody, ModelOut, ModelVersionOut

router = APIRouter(prefix="/models", tags=["models"])
ModelName = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^/\x00-\x1f]+$")]
_ERRORS = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 502: {"model": ErrorBody}}


def _model(client: MlflowClient, name: str, with_versions: bool) -> ModelOut:
    m = client.get_registered_model(name)
    aliases = {a: str(v) for a, v in m.aliases.items()}
    out = ModelOut(name=m.name, aliases=aliases)
    if with_versions:
        escaped = name.replace("'", "\\'")
        for v in client.search_model_versions(f"name='{escaped}'"):
            out.versions.append(
                ModelVersionOut(
                    version=str(v.version),
                    aliases=[a for a, ver in aliases.items() if ver == str(v.version)],
                    run_id=v.run_id,
                    status=str(v.status),
                    metrics=dict(v.tags),
                )
            )
    return out


@router.get("", response_model=list[ModelOut], responses=_ERRORS)
def list_models(settings: SettingsDep, caller: CallerDep):
    """Registered models and their aliases."""
    client = MlflowClient(settings.tracking_uri)
    return [_model(client, m.name, False) for m in client.search_registered_models()]


@router.get("/{name}", response_model=ModelOut, responses=_ERRORS)
def get_model(name: ModelName, settings: SettingsDep, caller: CallerDep):
    """One model: every version with its aliases, test metrics and job tags."""
    return _model(MlflowClient(settings.tracking_uri), name, True)


@router.post("/{name}/aliases", response_model=ModelOut, responses={**_ERRORS, 403: {}})
async def set_alias(name: ModelName, body: AliasIn, settings: SettingsDep, admin: AdminDep):
    """Point an alias (default `champion`) at a version. Admins only."""

    def promote() -> ModelOut:
        client = MlflowClient(settings.tracking_uri)
        client.get_model_version(name, body.version)  # 404 when it does not exist
        client.set_registered_model_alias(name, body.alias, body.version)
        return _model(client, name, True)

    return await run_in_threadpool(promote)
