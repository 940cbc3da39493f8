"""Creates MLflow's read-only users (`mlflow-users` image role), idempotently.

MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD (the admin) and
MLFLOW_READER_USERNAME / MLFLOW_READER_PASSWORD: a user that can read every experiment and
model (the server's default permission is READ) and change nothing, for the model servers.
"""

from __future__ import annotations

import os
import sys
import time

import requests


def create_user(url: str, admin: tuple[str, str], user: str, password: str) -> str:
    """'created' or 'exists'; waits up to a minute for the server to answer."""
    deadline = time.monotonic() + 60
    while True:
        try:
            r = requests.post(
                f"{url.rstrip('/')}/api/2.0/mlflow/users/create",
                json={"username": user, "password": password},
                auth=admin,
                timeout=10,
            )
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    if r.ok:
        return "created"
    if r.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in r.text:
        return "exists"
    raise RuntimeError(f"creating MLflow user {user}: {r.status_code} {r.text[:200]}")


def main() -> int:
    env = os.environ
    admin = (
        env.get("MLFLOW_AUTH_ADMIN_USERNAME", "rnntune-admin"),
        env["MLFLOW_AUTH_ADMIN_PASSWORD"],
    )
    user, password = env["MLFLOW_READER_USERNAME"], env["MLFLOW_READER_PASSWORD"]
    print(f"{user}: {create_user(env['MLFLOW_TRACKING_URI'], admin, user, password)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
