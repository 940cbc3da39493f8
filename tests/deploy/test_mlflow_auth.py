"""The deployed MLflow server (the image's `mlflow` role) requires credentials, and only the
admin's (held by the job service and the Ray nodes) can register models or move aliases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy.serving.entrypoint import auth_config, command
from deploy.serving.mlflow_users import create_user
from service.stack import free_port
from tests.support.mlflow_api import mlflow_api
from tests.support.paths import ROOT
from tests.support.processes import stop_process, wait_http

pytestmark = pytest.mark.slow
ADMIN = ("rnntune-admin", "admin-pw-for-tests")


@pytest.fixture(scope="module")
def authed_mlflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    env = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": (root / "artifacts").as_uri(),
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'auth.db'}",
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-csrf-key",
        "MLFLOW_WORKERS": "1",
    }
    port = free_port()
    argv = command("mlflow", ["--host", "127.0.0.1", "--port", str(port)], env)
    bindir = Path(sys.executable).parent
    proc_env = {
        **os.environ,
        **env,
        **auth_config(env, root / "auth.ini"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.Popen(
        [str(bindir / argv[0]), *argv[1:]],
        env=proc_env,
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=90, proc=proc)
        yield url
    finally:
        stop_process(proc)


def test_anonymous_callers_get_401(authed_mlflow):
    assert mlflow_api(authed_mlflow, "registered-models/search").status_code == 401
    alias = {"name": "m", "alias": "champion", "version": "1"}
    assert mlflow_api(authed_mlflow, "registered-models/alias", **alias).status_code == 401


def test_only_the_admin_registers_and_moves_aliases(authed_mlflow):
    url = authed_mlflow
    assert create_user(url, ADMIN, "model-server", "reader-password-1") == "created"
    assert create_user(url, ADMIN, "model-server", "reader-password-1") == "exists"  # idempotent
    reader = ("model-server", "reader-password-1")
    assert mlflow_api(url, "registered-models/create", ADMIN, name="team-model").ok
    version = mlflow_api(url, "model-versions/create", ADMIN, name="team-model", source="s3://b/m")
    assert version.ok, version.text
    alias = {"name": "team-model", "alias": "champion", "version": "1"}
    assert mlflow_api(url, "registered-models/alias", ADMIN, **alias).ok
    assert mlflow_api(url, "registered-models/search", reader).ok  # the model server can read
    moved = mlflow_api(url, "registered-models/alias", reader, **{**alias, "alias": "evil"})
    assert moved.status_code == 403, moved.text
    # MLflow's basic-auth lets any authenticated user create a *new* model name; what matters,
    # the registered models and their aliases, stay the admin's.
    versions = mlflow_api(
        url, "model-versions/create", reader, name="team-model", source="s3://b/x"
    )
    assert versions.status_code == 403, versions.text


def test_deploy_files_give_write_credentials_to_the_service_and_cluster_only():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert "--app-name" in command("mlflow", [], services["mlflow"]["environment"])
    writers = {"service", "ray-head", "ray-worker"}
    for name, svc in services.items():
        env = svc.get("environment", {})
        if name in writers:
            assert env["MLFLOW_TRACKING_USERNAME"] == "rnntune-admin", name
        elif "MLFLOW_TRACKING_PASSWORD" in env:
            assert "MLFLOW_ADMIN_PASSWORD" not in env["MLFLOW_TRACKING_PASSWORD"], name
    assert services["model-server"]["environment"]["MLFLOW_TRACKING_USERNAME"] == "model-server"
    assert "mlflow_auth" in (ROOT / "deploy" / "postgres-init.sql").read_text()
    for path in (ROOT / "deploy" / "k8s").glob("*.yaml"):
        text = path.read_text()
        if path.name == "model-server.yaml":
            assert "MLFLOW_READER_PASSWORD" in text and "MLFLOW_WRITER" not in text
        elif path.name in ("service.yaml", "raycluster.yaml", "rayjob.yaml"):
            assert "MLFLOW_WRITER_PASSWORD" in text, path.name
