"""The Docker image's entrypoint: `<role> [extra args]` -> the process for that role (exec'd).

Roles: service, ray-head, ray-worker, model-server, mlflow, mlflow-users, job. Each reads its
addresses from the environment (the job service's settings are `RNNTUNE_*`, see
service/settings.py).

The `mlflow` role runs MLflow's basic-auth app: every request needs credentials, users other
than the admin may only read (`default_permission = READ`), so only what holds the admin's
credentials (the job service and the Ray cluster) can register models and move aliases.
`MLFLOW_AUTH=off` turns it off explicitly (a private network you trust).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROLE_FILE = Path(
    os.environ.get("RNNTUNE_ROLE_FILE", "/tmp/rnntune-role")
)  # read by the healthcheck


def command(role: str, args: list[str], env: dict[str, str]) -> list[str]:
    """The argv a role runs; ValueError for an unknown role or a missing setting."""
    port = env.get("PORT", "5000" if role == "mlflow" else "8000")
    match role:
        case "service":
            return ["uvicorn", "--factory", "service.app:create_app", "--host", "0.0.0.0"] + [
                "--port",
                port,
                "--proxy-headers",
                *args,
            ]
        case "ray-head":
            return ["ray", "start", "--head", "--block", "--port", "6379", "--dashboard-host"] + [
                "0.0.0.0",
                "--dashboard-port",
                "8265",
                "--disable-usage-stats",
                *args,
            ]
        case "ray-worker":
            address = _need(env, "RAY_HEAD_ADDRESS", role)
            return ["ray", "start", "--block", "--address", address, "--disable-usage-stats", *args]
        case "model-server":
            uri = _need(env, "SERVE_MODEL_URI", role)
            return ["rnntune", "serve", uri, "--host", "0.0.0.0", "--port", port, *args]
        case "mlflow":
            auth = [] if env.get("MLFLOW_AUTH") == "off" else ["--app-name", "basic-auth"]
            return ["mlflow", "server", "--host", "0.0.0.0", "--port", port, *auth] + [
                "--backend-store-uri",
                _need(env, "MLFLOW_BACKEND_STORE_URI", role),
                "--artifacts-destination",
                _need(env, "MLFLOW_ARTIFACTS_DESTINATION", role),
                "--workers",
                env.get("MLFLOW_WORKERS", "2"),
                *args,
            ]
        case "mlflow-users":
            return ["python", "-m", "deploy.serving.mlflow_users", *args]
        case "job":
            return ["python", "-m", "tune", "run", *args]
    raise ValueError(
        f"role: unknown {role!r} "
        "(service, ray-head, ray-worker, model-server, mlflow, mlflow-users, job)"
    )


AUTH_CACHE_TTL_S = 60  # MLflow's cache of verified credentials (off by default)


def auth_config(env: dict[str, str], path: Path) -> dict[str, str]:
    """Writes MLflow's basic-auth config (admin from the environment, others read-only) and
    returns the variables the server needs; nothing when auth is off."""
    if env.get("MLFLOW_AUTH") == "off":
        return {}
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {_need(env, 'MLFLOW_AUTH_DATABASE_URI', 'mlflow')}\n"
        f"admin_username = {env.get('MLFLOW_AUTH_ADMIN_USERNAME', 'rnntune-admin')}\n"
        f"admin_password = {_need(env, 'MLFLOW_AUTH_ADMIN_PASSWORD', 'mlflow')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A password check costs ~0.2 s of the server's CPU (PBKDF2) on every request without
        # this: a job's per-epoch writes and the service's 1 s status reads would pay it each
        # time. A changed password or removed user reaches other workers within the TTL.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
    )
    path.chmod(0o600)
    _need(env, "MLFLOW_FLASK_SERVER_SECRET_KEY", "mlflow")  # CSRF key, the same on every replica
    return {"MLFLOW_AUTH_CONFIG_PATH": str(path)}


def _need(env: dict[str, str], name: str, role: str) -> str:
    if not env.get(name):
        raise ValueError(f"{role}: set {name}")
    return env[name]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    role, args = (argv[0], argv[1:]) if argv else ("service", [])
    try:
        cmd = command(role, args, dict(os.environ))
        if role == "mlflow":
            os.environ.update(auth_config(dict(os.environ), Path("/tmp/mlflow-auth.ini")))
    except ValueError as e:
        sys.exit(f"rnntune image: {e}")
    try:
        ROLE_FILE.write_text(role)
    except OSError:
        pass  # a read-only /tmp: the healthcheck then only checks the default service port
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
