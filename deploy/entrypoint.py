"""The Docker image's entrypoint: `<role> [extra args]` -> the process for that role (exec'd).

Roles: service, ray-head, ray-worker, model-server, mlflow, job. Each reads its addresses from
the environment (the job service's settings are `RNNTUNE_*`, see service/settings.py).
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
            return ["mlflow", "server", "--host", "0.0.0.0", "--port", port] + [
                "--backend-store-uri",
                _need(env, "MLFLOW_BACKEND_STORE_URI", role),
                "--artifacts-destination",
                _need(env, "MLFLOW_ARTIFACTS_DESTINATION", role),
                "--workers",
                env.get("MLFLOW_WORKERS", "2"),
                *args,
            ]
        case "job":
            return ["python", "-m", "tune", "run", *args]
    raise ValueError(
        f"role: unknown {role!r} (service, ray-head, ray-worker, model-server, mlflow, job)"
    )


def _need(env: dict[str, str], name: str, role: str) -> str:
    if not env.get(name):
        raise ValueError(f"{role}: set {name}")
    return env[name]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    role, args = (argv[0], argv[1:]) if argv else ("service", [])
    try:
        cmd = command(role, args, dict(os.environ))
    except ValueError as e:
        sys.exit(f"rnntune image: {e}")
    try:
        ROLE_FILE.write_text(role)
    except OSError:
        pass  # a read-only /tmp: the healthcheck then only checks the default service port
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
