"""The operator's policy on what a job may touch: hostile URLs refused by the service (422, nothing
reaches Ray or MLflow) and again by the job driver started directly on the cluster."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
import requests
import yaml

from service.auth import hash_token
from service.stack import service_env, start_service, stop, wait_ready
from tests.support.paths import ROOT
from tune.policy import Policy, PolicyViolation
from tune.spec import parse_job_spec

ALLOWED = ["s3://team-bucket/", "/srv/data/", "https://data.example.com/"]
POLICY = Policy(
    allowed_url_prefixes=ALLOWED, storage_url="/srv/store", tracking_uri="http://mlflow:5000"
)

# (what, spec sections, field refused, reason)
HOSTILE = [
    (
        "shadow file url",
        {"data": {"name": "sequences", "url": "file:///etc/shadow"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "shadow path",
        {"data": {"name": "sequences", "url": "/etc/shadow"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "relative escape",
        {"data": {"name": "sequences", "url": "../../../../etc/shadow"}},
        "data.url",
        "relative path",
    ),
    (
        "dotdot inside allowed",
        {"data": {"name": "sequences", "url": "/srv/data/../../etc/shadow"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "file dotdot inside allowed",
        {"data": {"name": "sequences", "url": "file:///srv/data/x/../../../etc/passwd"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "prefix lookalike",
        {"data": {"name": "sequences", "url": "/srv/data-other/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "glob outside",
        {"data": {"name": "sequences", "url": "/srv/*/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "other bucket",
        {"data": {"name": "sequences", "url": "s3://other-bucket/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "bucket lookalike",
        {"data": {"name": "sequences", "url": "s3://team-bucket-evil/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "s3 dotdot",
        {"data": {"name": "sequences", "url": "s3://team-bucket/../other/x"}},
        "data.url",
        "'..'",
    ),
    (
        "gs not allowed",
        {"data": {"name": "sequences", "url": "gs://team-bucket/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "metadata address",
        {"data": {"name": "sequences", "url": "http://169.254.169.254/latest/meta-data/"}},
        "data.url",
        "link-local",
    ),
    (
        "loopback ip",
        {"data": {"name": "text", "url": "http://127.0.0.1:5000/api"}},
        "data.url",
        "loopback",
    ),
    (
        "localhost",
        {"data": {"name": "text", "url": "http://localhost/x.txt"}},
        "data.url",
        "loopback",
    ),
    (
        "private ip",
        {"data": {"name": "sequences", "url": "https://10.0.0.7/x.parquet"}},
        "data.url",
        "private",
    ),
    (
        "ipv6 loopback",
        {"data": {"name": "sequences", "url": "http://[::1]/x.parquet"}},
        "data.url",
        "loopback",
    ),
    (
        "ipv4 mapped",
        {"data": {"name": "sequences", "url": "http://[::ffff:127.0.0.1]/x"}},
        "data.url",
        "loopback",
    ),
    (
        "unspecified",
        {"data": {"name": "sequences", "url": "http://0.0.0.0/x.parquet"}},
        "data.url",
        "reserved",
    ),
    (
        "userinfo trick",
        {"data": {"name": "sequences", "url": "https://data.example.com@169.254.169.254/x"}},
        "data.url",
        "link-local",
    ),
    (
        "host lookalike",
        {"data": {"name": "sequences", "url": "https://data.example.com.evil.io/x"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "unlisted host",
        {"data": {"name": "sequences", "url": "https://evil.io/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "http not https",
        {"data": {"name": "sequences", "url": "http://data.example.com/x.parquet"}},
        "data.url",
        "not under an allowed prefix",
    ),
    (
        "backslash",
        {"data": {"name": "sequences", "url": "/srv/data/..\\..\\etc"}},
        "data.url",
        "backslashes",
    ),
    (
        "nul byte",
        {"data": {"name": "sequences", "url": "/srv/data/x\x00.parquet"}},
        "data.url",
        "control characters",
    ),
    (
        "test url",
        {"data": {"name": "sequences", "url": "/srv/data/a.parquet", "test_url": "/etc/passwd"}},
        "data.test_url",
        "not under",
    ),
    (
        "val url",
        {"data": {"name": "sequences", "url": "/srv/data/a.parquet", "val_url": "memory://x"}},
        "data.val_url",
        "not under",
    ),
    ("mnist url", {"data": {"name": "mnist_rows", "url": "/root/.ssh/"}}, "data.url", "not under"),
    ("text url", {"data": {"name": "text", "url": "/proc/self/environ"}}, "data.url", "not under"),
    ("storage elsewhere", {"storage": {"url": "file:///some/where"}}, "storage.url", "not under"),
    ("storage dotdot", {"storage": {"url": "/srv/store/../../etc"}}, "storage.url", "not under"),
    ("storage other bucket", {"storage": {"url": "s3://other/ckpts"}}, "storage.url", "not under"),
    (
        "tracking sqlite",
        {"tracking": {"uri": "sqlite:////srv/service/jobs.db"}},
        "tracking.uri",
        "service's MLflow",
    ),
    (
        "tracking elsewhere",
        {"tracking": {"uri": "http://attacker.example:5000"}},
        "tracking.uri",
        "service's MLflow",
    ),
    (
        "tracking metadata",
        {"tracking": {"uri": "http://169.254.169.254"}},
        "tracking.uri",
        "service's MLflow",
    ),
]


def _spec(sections: dict):
    raw = {"data": {"name": "mnist1d"}, "storage": {"url": "/srv/store/jobs"}, **sections}
    return parse_job_spec(raw)


@pytest.mark.parametrize("what, sections, field, reason", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_policy_refuses_hostile_urls(what, sections, field, reason):
    with pytest.raises(PolicyViolation) as err:
        POLICY.check(_spec(sections), on_cluster=False)
    fields = dict(err.value.problems)
    assert field in fields and reason in fields[field], err.value.problems


@pytest.mark.parametrize(
    "sections",
    [
        {"data": {"name": "sequences", "url": "s3://team-bucket/sensors/part-*.parquet"}},
        {
            "data": {
                "name": "sequences",
                "url": "/srv/data/x.csv",
                "test_url": "file:///srv/data/t.csv",
            }
        },
        {"data": {"name": "sequences", "url": "https://data.example.com/x.parquet"}},
        {"data": {"name": "mnist1d"}, "storage": {"url": "s3://team-bucket/ckpts"}},
        {"tracking": {"uri": "http://mlflow:5000"}},
    ],
)
def test_policy_allows_what_lies_under_its_prefixes(sections):
    POLICY.check(_spec(sections), on_cluster=False)


def test_driver_side_resolves_symlinks_and_numeric_hosts(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.parquet").write_text("x")
    (allowed / "ok.parquet").write_text("x")
    policy = Policy(allowed_url_prefixes=[str(allowed)], storage_url=str(tmp_path / "store"))
    store = {"storage": {"url": str(tmp_path / "store")}}
    ok = {"data": {"name": "sequences", "url": str(allowed)}, **store}
    policy.check(_spec(ok), on_cluster=True)
    (allowed / "link.parquet").symlink_to(outside / "secret.parquet")
    (allowed / "dir").symlink_to(outside)
    for url in (
        str(allowed),
        str(allowed / "link.parquet"),
        f"{allowed}/*.parquet",
        str(allowed / "dir"),
    ):
        with pytest.raises(PolicyViolation, match="outside the allowed prefixes|not under"):
            policy.check(_spec({"data": {"name": "sequences", "url": url}, **store}), True)
    # 2130706433 is 127.0.0.1 written as one number: only resolving it shows where it points
    numeric = {"data": {"name": "sequences", "url": "http://2130706433/x"}, **store}
    wide = Policy(allowed_url_prefixes=["http://2130706433/"], storage_url=str(tmp_path / "store"))
    wide.check(_spec(numeric), on_cluster=False)
    with pytest.raises(PolicyViolation, match="loopback, link-local, private"):
        wide.check(_spec(numeric), on_cluster=True)


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_driver_refuses_a_disallowed_url_when_started_directly(tmp_path):
    """`python -m tune run` on a cluster with a policy, the spec never having seen the service."""
    spec = {
        "name": "direct",
        "data": {"name": "sequences", "url": "file:///etc/shadow"},
        "storage": {"url": str(tmp_path / "store")},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {
        **os.environ,
        "RNNTUNE_ALLOWED_URL_PREFIXES": json.dumps([str(tmp_path / "data")]),
        "RNNTUNE_STORAGE_URL": str(tmp_path / "store"),
        "RNNTUNE_TRACKING_URI": "http://127.0.0.1:9",
    }
    out = subprocess.run(
        [sys.executable, "-m", "tune", "run", str(path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert (
        "refused by the cluster's policy" in out.stderr
        and "data.url: file:///etc/shadow" in out.stderr
    )
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "store").exists()  # nothing written, nothing read


class CountingListener:
    """A TCP port that counts connections: stands in for Ray and MLflow, which nothing may reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


@pytest.fixture(scope="module")
def guarded_service(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy-service")
    ray, mlflow = CountingListener(), CountingListener()
    (root / "tokens.json").write_text(
        json.dumps([{"user": "eve", "role": "user", "sha256": hash_token("eve-token")}])
    )
    env = service_env(root, ray.url, mlflow.url, root / "tokens.json", None, ALLOWED)
    proc = start_service(root / "logs", env)
    try:
        wait_ready(proc, "/healthz")
        yield proc.url, ray, mlflow
    finally:
        stop(proc)
        ray.sock.close()
        mlflow.sock.close()


def test_service_answers_422_and_nothing_reaches_ray_or_mlflow(guarded_service):
    url, ray, mlflow = guarded_service
    headers = {"Authorization": "Bearer eve-token"}
    for what, sections, field, reason in HOSTILE:
        body = {"name": "hostile", "data": {"name": "mnist1d"}, **sections}
        r = requests.post(f"{url}/jobs", json=body, headers=headers, timeout=30)
        assert r.status_code == 422, (what, r.status_code, r.text)
        problems = {p["field"]: p["message"] for p in r.json()["errors"]}
        assert field in problems and reason in problems[field], (what, problems)
    assert requests.get(f"{url}/jobs", headers=headers, timeout=30).json()["items"] == []
    assert ray.connections == 0 and mlflow.connections == 0


def test_service_refuses_deep_huge_and_duplicate_bodies_with_422(guarded_service):
    url, ray, mlflow = guarded_service
    auth = {"Authorization": "Bearer eve-token"}
    yaml_type = {**auth, "Content-Type": "application/yaml"}
    json_type = {**auth, "Content-Type": "application/json"}
    cases = [
        ("[" * 10_000 + "]" * 10_000, json_type, "nested deeper"),
        ("[" * 10_000 + "]" * 10_000, yaml_type, "nested deeper"),
        (
            '{"data": {"name": "mnist1d"}, "search": {"num_samples": 1' + "0" * 400 + "}}",
            json_type,
            "too large",
        ),
        ("data: {name: mnist1d}\nname: a\nname: b\n", yaml_type, "duplicate key 'name'"),
    ]
    for body, headers, reason in cases:
        r = requests.post(f"{url}/jobs", data=body.encode(), headers=headers, timeout=30)
        assert r.status_code == 422, (reason, r.status_code, r.text[:300])
        assert reason in r.json()["errors"][0]["message"], r.text[:300]
    assert ray.connections == 0 and mlflow.connections == 0


# (what, spec sections, status, field or message fragment)
OVER_LIMITS = [
    ("trials", {"search": {"num_samples": 1000}}, 403, "trials per job"),
    ("ddp cpus", {"resources": {"workers": 16, "cpus": 1}}, 403, "workers x cpus"),
    ("ddp gpus", {"resources": {"workers": 4, "gpus": 1}}, 403, "workers x gpus"),
    ("driver cpus", {"resources": {"driver_cpus": 100}}, 403, "driver CPUs"),
    ("driver gpus", {"resources": {"driver_gpus": 1}}, 403, "driver GPUs"),
    (
        "huge model",
        {"model": {"num_layers": 16, "hidden_size": 8192}, "search_space": {}},
        422,
        "model.hidden_size",
    ),
    (
        "huge space",
        {"search_space": {"hidden_size": {"choice": [8, 8192]}, "num_layers": {"choice": [1, 16]}}},
        422,
        "search_space.hidden_size",
    ),
    ("threads", {"trainer": {"threads": 100000}}, 422, "trainer.threads"),
    ("samples", {"data": {"name": "mnist1d", "num_samples": 10**10}}, 422, "data.num_samples"),
    ("steps", {"data": {"name": "adding", "seq_len": 10**7}}, 422, "data.seq_len"),
]


def test_service_refuses_jobs_over_its_limits_before_ray_or_mlflow(guarded_service):
    url, ray, mlflow = guarded_service
    headers = {"Authorization": "Bearer eve-token"}
    for what, sections, code, where in OVER_LIMITS:
        body = {"name": "greedy", "data": {"name": "mnist1d"}, **sections}
        r = requests.post(f"{url}/jobs", json=body, headers=headers, timeout=30)
        assert r.status_code == code and where in r.text, (what, r.status_code, r.text[:300])
    assert ray.connections == 0 and mlflow.connections == 0


def test_driver_refuses_more_data_than_the_policy_allows(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.parquet").write_bytes(b"x" * 4000)
    (data / "b.parquet").write_bytes(b"x" * 4000)
    policy = Policy(
        allowed_url_prefixes=[str(data)], storage_url=str(tmp_path / "s"), max_dataset_bytes=5000
    )
    spec = _spec(
        {"data": {"name": "sequences", "url": str(data)}, "storage": {"url": str(tmp_path / "s")}}
    )
    policy.check(spec, on_cluster=False)  # the service cannot see sizes
    with pytest.raises(PolicyViolation, match=r"data.url: 8.0 kB of data, the limit is 5.0 kB"):
        policy.check(spec, on_cluster=True)
