"""MLflow's REST API called directly, as a browser or a script without the client would."""

from __future__ import annotations

import requests


def mlflow_api(url: str, path: str, auth=None, **body) -> requests.Response:
    """POST `body` (GET without one) to `url`/api/2.0/mlflow/`path`, with basic `auth`."""
    method = requests.post if body else requests.get
    return method(f"{url}/api/2.0/mlflow/{path}", json=body or None, auth=auth, timeout=30)
