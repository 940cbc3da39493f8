"""Every example spec validates and trains for one (shortened) epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_modules.config import TrainSpec
from lightning_modules.training import train
from tests.support.paths import ROOT, SHAKESPEARE
from tune.spec import load_job_spec

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# Shrink the data so each smoke run takes seconds; the full runs are `make demo` and bench/.
SMOKE_DATA = {
    "mnist_rows": {"limit": 300},
    "mnist1d": {"limit": 300},
    "digits": {"limit": 300},
    "adding": {"n_train": 300, "n_val": 100, "n_test": 100},
    "copy": {"n_train": 300, "n_val": 100, "n_test": 100},
    "text": {"limit_chars": 20000},
    "sequences": {"limit": 100},
}
EXAMPLE_DATA = "data/japanese_vowels"  # where examples/data/japanese_vowels.py writes


@pytest.fixture(scope="module")
def japanese_vowels(tmp_path_factory) -> Path:
    """The user-data examples' files, made by the example's own script (from sktime's wheel)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("japanese_vowels")
    script = ROOT / "examples" / "data" / "japanese_vowels.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, timeout=120)
    return out


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"mnist1d.yaml", "seed_lstm_mnist.yaml", "seed_bilstm_mnist.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_smoke(path: Path, tmp_path, monkeypatch, request):
    monkeypatch.chdir(ROOT)  # example URLs are relative to the project root
    # Every example is a valid job spec; train specs are its fixed settings without a search.
    spec = load_job_spec(path).base_train_spec()
    raw = spec.model_dump()
    raw["data"].update(SMOKE_DATA[spec.data.name])
    if spec.data.name == "text":  # the example reads the full corpus; the excerpt is in the repo
        raw["data"]["url"] = str(SHAKESPEARE)
    if spec.data.name == "sequences":
        made = str(request.getfixturevalue("japanese_vowels"))
        for key in ("url", "val_url", "test_url"):
            if raw["data"][key]:
                raw["data"][key] = raw["data"][key].replace(EXAMPLE_DATA, made)
    raw["trainer"].update(max_epochs=1, diagnostics=False)
    spec = TrainSpec.model_validate(raw)
    result = train(spec, tmp_path, logger=False, enable_progress_bar=False)
    assert result.status == "completed" and result.epochs == 1
    assert result.test, "no test metrics"
