"""Typed dependencies of the routes: settings, the job service and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import Principal, TokenTable
from service.jobs import JobService
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="a token from the service's tokens file")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_jobs(request: Request) -> JobService:
    return request.app.state.jobs


def get_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    table: TokenTable = request.app.state.tokens
    principal = table.principal(credentials.credentials if credentials else None)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def get_admin(caller: Annotated[Principal, Depends(get_caller)]) -> Principal:
    if not caller.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobsDep = Annotated[JobService, Depends(get_jobs)]
CallerDep = Annotated[Principal, Depends(get_caller)]
AdminDep = Annotated[Principal, Depends(get_admin)]
