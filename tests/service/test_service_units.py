"""The job service's parts without servers: tokens, settings, the job store, the fixed entrypoint."""

from __future__ import annotations

import json
import shlex

import pytest

from service.auth import DEV_TOKEN, AuthConfigError, TokenTable, hash_token, load_tokens
from service.ray_jobs import entrypoint
from service.settings import Settings
from tests.support.paths import ROOT


def _entry(user: str, token: str, role: str = "user") -> dict:
    return {"user": user, "role": role, "sha256": hash_token(token)}


def test_tokens_are_matched_by_hash_to_user_and_role(tmp_path):
    tokens_file = tmp_path / "tokens.yaml"
    tokens_file.write_text(json.dumps([_entry("root", "s3cret-admin", "admin")]))
    settings = Settings(tokens=json.dumps([_entry("alice", "s3cret-a")]), tokens_file=tokens_file)
    table = TokenTable(load_tokens(settings))
    assert table.principal("s3cret-a").user == "alice" and not table.principal("s3cret-a").is_admin
    assert table.principal("s3cret-admin").is_admin
    assert table.principal("s3cret") is None and table.principal(None) is None
    assert "s3cret" not in tokens_file.read_text()  # only hashes are stored


def test_refuses_to_start_without_tokens_or_with_the_dev_token():
    with pytest.raises(AuthConfigError, match="none configured"):
        load_tokens(Settings(dev_mode=False))
    with pytest.raises(AuthConfigError, match="dev token"):
        load_tokens(Settings(tokens=json.dumps([_entry("x", DEV_TOKEN)])))
    with pytest.raises(AuthConfigError, match="tokens"):
        load_tokens(Settings(tokens='[{"user": "x", "sha256": "not-a-hash"}]'))
    dev = TokenTable(load_tokens(Settings(dev_mode=True)))
    assert dev.principal(DEV_TOKEN).is_admin


def test_refusal_reaches_the_app_factory(monkeypatch):
    from service.app import create_app

    monkeypatch.delenv("RNNTUNE_TOKENS", raising=False)
    monkeypatch.delenv("RNNTUNE_DEV_MODE", raising=False)
    with pytest.raises(AuthConfigError):
        create_app(Settings())


def test_settings_come_from_rnntune_environment(monkeypatch):
    monkeypatch.setenv("RNNTUNE_MAX_CONCURRENT_JOBS", "7")
    monkeypatch.setenv("RNNTUNE_RAY_ADDRESS", "http://head:8265")
    s = Settings()
    assert s.max_concurrent_jobs == 7 and s.ray_address == "http://head:8265"


def test_entrypoint_is_fixed_and_quoted():
    cmd = entrypoint("/opt/venv/bin/python", "job-1")
    assert shlex.split(cmd) == ["/opt/venv/bin/python", "-m", "tune", "run", "job_spec.json"] + [
        "--job-id",
        "job-1",
    ]
    assert shlex.split(entrypoint("/p", "x; rm -rf /"))[-1] == "x; rm -rf /"  # one argument


def test_cli_says_when_the_service_is_unreachable(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from service.stack import free_port

    env = {**os.environ, "RNNTUNE_HOME": str(tmp_path)}
    env |= {"RNNTUNE_URL": f"http://127.0.0.1:{free_port()}", "RNNTUNE_TOKEN": "t"}
    rnntune = str(Path(sys.executable).parent / "rnntune")
    for argv in (
        ["status"],
        ["cancel", "job-1"],
        ["submit", str(ROOT / "examples" / "mnist1d.yaml")],
    ):
        run = subprocess.run([rnntune, *argv], env=env, capture_output=True, text=True)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert "cannot reach the job service" in run.stderr, run.stderr


def test_submit_sends_relative_data_paths_as_absolute(tmp_path, monkeypatch):
    """`rnntune submit examples/x.yaml` resolves local data paths as `rnntune run` does, so the
    service's policy judges the files meant; URLs and absolute paths go as written."""
    from service.client import submission_body

    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "# comment\nname: j\ndata:\n  name: sequences\n  url: data/train.parquet\n"
        "  test_url: s3://bucket/test.parquet\n  val_url: /abs/val.parquet\n"
    )
    body, kind = submission_body(spec)
    sent = json.loads(body)
    assert kind == "application/json"
    assert sent["data"]["url"] == str(tmp_path / "data" / "train.parquet")
    assert sent["data"]["test_url"] == "s3://bucket/test.parquet"
    assert sent["data"]["val_url"] == "/abs/val.parquet"
    assert sent["name"] == "j"
    # Nothing to resolve, or a document the service must judge: the file's own bytes
    builtin = tmp_path / "digits.yaml"
    builtin.write_text("name: d\ndata: {name: digits}\n")
    assert submission_body(builtin) == (builtin.read_bytes(), "application/yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    assert submission_body(broken) == (broken.read_bytes(), "application/yaml")


class _CountingRay:
    """Stands in for the Ray Jobs API in a unit test: answers RUNNING, counts the questions."""

    def __init__(self) -> None:
        self.asked = 0

    def status(self, job_id: str) -> tuple[str, str]:
        self.asked += 1
        return "RUNNING", ""


def test_reads_of_one_job_within_the_refresh_interval_share_one_refresh(tmp_path):
    import threading

    from service.jobs import JobService
    from service.store import Job, JobStore

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    job = Job(
        id="j", owner="a", name="n", spec={}, metric="val_acc", mode="max",
        tracking_uri="elsewhere", experiment="e", status="PENDING", trials={},
    )  # fmt: skip
    store.add(job)
    ray = _CountingRay()
    service = JobService(Settings(refresh_interval_s=60), store, ray)
    start = threading.Barrier(16)
    answers = []

    def read() -> None:
        start.wait()
        answers.append(service.sync(store.get("j")))

    threads = [threading.Thread(target=read) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ray.asked == 1 and len(answers) == 16
    assert service.sync(store.get("j"), force=True).job.status == "RUNNING" and ray.asked == 2
    service.settings = Settings(refresh_interval_s=0)
    service.sync(store.get("j"))
    assert ray.asked == 3
    store.close()
