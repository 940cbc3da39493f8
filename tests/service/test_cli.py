"""`rnntune train`: bad input gives a one-line reason and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _rnntune(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_train_bad_spec_names_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: digits}\nmodel: {cell_type: lstn, hidden_size: 0}\n")
    proc = _rnntune("train", str(bad))
    assert proc.returncode == 2
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
