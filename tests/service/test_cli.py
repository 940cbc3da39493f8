"""The `rnntune` CLI: bad input gives a one-line reason and a non-zero exit, never a traceback;
every command and option has help and a stated default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from tests.support.paths import ROOT

# No job service, MLflow server or local stack of other tests: each command finds only what
# its own test made.
CLEAN_ENV = {
    **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RNNTUNE_URL")},
    "RNNTUNE_HOME": tempfile.mkdtemp(prefix="rnntune-home-"),
}


def _rnntune(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=CLEAN_ENV,
    )


def test_train_bad_spec_names_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: digits}\nmodel: {cell_type: lstn, hidden_size: 0}\n")
    proc = _rnntune("train", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"rnntune: invalid spec {bad}:\n")  # the README's header
    assert "model.cell_type: unknown cell type 'lstn'" in proc.stderr
    assert "model.hidden_size:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_missing_file_and_bad_yaml(tmp_path):
    proc = _rnntune("train", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    proc = _rnntune("train", str(tmp_path / "broken.yaml"))
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_train_runs_and_reports(tmp_path):
    proc = _rnntune(
        "train",
        "examples/digits.yaml",
        "--max-epochs",
        "2",
        "--quiet",
        "--output-dir",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test_acc" in proc.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["test"]["test_acc"] > 0.5


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_train_diverged_exits_nonzero(tmp_path):
    spec = tmp_path / "boom.yaml"
    spec.write_text(
        "data: {name: adding, seq_len: 30, n_train: 2000}\n"
        "model: {cell_type: rnn_relu, hidden_size: 64}\n"
        "optim: {optimizer: sgd, lr: 10.0, batch_size: 50}\n"
        "trainer: {max_epochs: 3}\n"
    )
    proc = _rnntune("train", str(spec), "--quiet", "--output-dir", str(tmp_path / "run"))
    assert proc.returncode == 1
    assert "diverged" in proc.stdout and "Traceback" not in proc.stderr


def test_schema_prints_job_spec_json_schema():
    proc = _rnntune("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert "search_space" in schema["properties"] and "scheduler" in schema["properties"]


def test_run_bad_job_spec_names_field(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text("data: {name: digits}\nsearch_space: {cell_type: {choice: [lstm, lstn]}}\n")
    proc = _rnntune("run", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "search_space.cell_type: value 'lstn' is invalid" in proc.stderr


@pytest.mark.slow  # a CLI or Ray process of its own: seconds
def test_models_and_promote(tmp_path):
    """`rnntune models` lists versions and aliases; `promote` moves an alias; bad names are one line."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("demo")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    for _ in range(2):
        run = client.create_run(exp)
        v = client.create_model_version("demo", f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_model_version_tag("demo", v.version, "metric", "test_acc")
        client.set_model_version_tag("demo", v.version, "test_acc", "0.9")
    client.set_registered_model_alias("demo", "champion", "1")
    proc = _rnntune("promote", "demo", "2", "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr
    assert str(client.get_model_version_by_alias("demo", "champion").version) == "2"
    listing = _rnntune("models", "--tracking-uri", uri)
    assert listing.returncode == 0 and "champion" in listing.stdout and "0.9" in listing.stdout
    missing = _rnntune("promote", "demo", "7", "--tracking-uri", uri)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_version_and_did_you_mean():
    proc = _rnntune("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("rnntune ")
    proc = _rnntune("rnu", "x.yaml")
    assert proc.returncode == 2 and "No such command 'rnu'. Did you mean 'run'?" in proc.stderr
    proc = _rnntune("resume", "job", "--storge", "x")
    assert proc.returncode == 2 and "No such option: --storge" in proc.stderr
    assert "(Possible options: --storage)" in proc.stderr and "Traceback" not in proc.stderr


def test_every_option_has_help_and_a_default():
    from typer.main import get_command

    from service.cli import app

    root = get_command(app)
    commands = {name: root.commands[name] for name in root.commands}
    commands |= {f"data {n}": c for n, c in root.commands["data"].commands.items()}
    checked = 0
    for name, command in commands.items():
        assert command.help, f"{name}: no help"
        for param in command.params:
            if param.name in ("help",) or getattr(param, "is_flag", False):
                continue
            assert getattr(param, "help", None), f"{name} {param.name}: no help"
            if not param.required:  # a stated default: the value, or [default: ...] in words
                stated = param.default is not None or "[default:" in param.help
                assert stated, f"{name} {param.name}: no default shown"
            checked += 1
    assert checked > 30


def test_cluster_entrypoint_parses_its_own_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "tune", "resume", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        proc.returncode == 0
        and "--storage" in proc.stdout
        and "[default: runs/tune]" in proc.stdout
    )


def test_models_without_a_store_says_where_it_looked(tmp_path):
    env_free = _rnntune("models", cwd=tmp_path)  # no runs/tune here, no service configured
    assert env_free.returncode == 2 and "no MLflow store at" in env_free.stderr
    assert not (tmp_path / "runs").exists(), "an empty store was created"


def test_resume_of_an_unknown_job_names_it_and_the_storage(tmp_path):
    proc = _rnntune("resume", "nosuchjob", "--storage", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"job_id: no job 'nosuchjob' in {tmp_path}" in proc.stderr
    assert "Errno" not in proc.stderr and "UserWarning" not in proc.stderr


def test_schema_into_a_closed_pipe_ends_quietly():
    proc = subprocess.run(
        f"{sys.executable} -m service.cli schema | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "{" and proc.stderr == ""


def test_train_on_a_job_spec_with_a_typo_names_only_the_typo(tmp_path):
    job = (ROOT / "examples" / "mnist1d.yaml").read_text().replace("cell_type:", "cell_typ:", 1)
    (tmp_path / "job.yaml").write_text(job)
    proc = _rnntune("train", str(tmp_path / "job.yaml"))
    assert proc.returncode == 2
    problems = proc.stderr.split(".yaml:\n", 1)[1].strip().splitlines()
    assert len(problems) == 1 and problems[0].startswith("search_space.cell_typ:"), proc.stderr


@pytest.mark.slow  # an MLflow server of its own
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ui_serves_the_embedded_store_and_prints_the_jobs_run(tmp_path, stop):
    """`rnntune ui JOB`: the MLflow UI on the job's embedded store, at its parent run's page;
    Ctrl-C and SIGTERM (a process manager, `timeout`) both stop the server it started, even
    when it was started with SIGINT ignored (a background job of a script or CI runner)."""
    import signal
    import time
    import urllib.request

    from mlflow.tracking import MlflowClient

    store = tmp_path / "runs" / "tune"
    store.mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.create_experiment("ui-test", artifact_location=(store / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={"rnntune.job_id": "job-1"}).info.run_id
    client.create_run(exp, tags={"rnntune.job_id": "job-1", "mlflow.parentRunId": parent})
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "ui", "job-1"],
        cwd=tmp_path,
        env=CLEAN_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        line = proc.stdout.readline()  # printed once the UI answers
        assert f"/#/experiments/{exp}/runs/{parent}" in line, line + proc.stderr.read()
        base = line.split("MLflow UI: ", 1)[1].split("/#/", 1)[0]
        with urllib.request.urlopen(f"{base}/health", timeout=10) as answer:
            assert answer.status == 200
    finally:
        proc.send_signal(getattr(signal, stop))
        assert proc.wait(timeout=60) == 0
    time.sleep(1)
    try:  # the server went with it
        urllib.request.urlopen(f"{base}/health", timeout=3)
        raise AssertionError("the MLflow UI outlived `rnntune ui`")
    except OSError:
        pass
    missing = _rnntune("ui", "nosuch", cwd=tmp_path)
    assert missing.returncode == 2 and "job_id: no job 'nosuch' in this store" in missing.stderr
