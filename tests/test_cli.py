"""`rnntune train`: bad input gives a one-line reason and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

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
