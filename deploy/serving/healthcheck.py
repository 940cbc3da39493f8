"""The image's HEALTHCHECK: probe whatever the entrypoint started (exit 0 healthy, 1 not)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from deploy.serving.entrypoint import ROLE_FILE

PROBES = {
    "service": "http://127.0.0.1:{port}/healthz",
    "model-server": "http://127.0.0.1:{port}/healthz",
    "mlflow": "http://127.0.0.1:{port}/health",
    "ray-head": "http://127.0.0.1:8265/api/version",
}


def main() -> int:
    role = ROLE_FILE.read_text().strip() if ROLE_FILE.exists() else "service"
    if role == "job":
        return 0  # a job container is healthy while it runs; its exit code is the verdict
    if role == "ray-worker":
        address = os.environ.get("RAY_HEAD_ADDRESS", "")
        return subprocess.call(["ray", "health-check", "--address", address], timeout=8)
    port = os.environ.get("PORT", "5000" if role == "mlflow" else "8000")
    try:
        with urllib.request.urlopen(PROBES[role].format(port=port), timeout=8):
            return 0
    except OSError as e:
        print(f"{role}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
