"""A job's start does not wait for torch: the driver and the data check import none of the
training stack before the search (tune/trials.py, lightning_modules/data/reading.py), and the
driver imports it for registering only once the last trials run."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

from tests.support.paths import ROOT
from tests.support.sequence_data import sensor_sequences, write_parquet
from tune import driver


def test_driver_and_data_check_import_no_torch(tmp_path):
    xs, labels, _ = sensor_sequences(n=60, seed=1)
    url = write_parquet(tmp_path / "d.parquet", xs, labels)
    probe = (
        "import json, sys\n"
        "import tune.driver\n"
        "from tune.protocol import adapt, read_plan\n"
        "from tune.spec import parse_job_spec\n"
        f"spec = parse_job_spec({{'data': {{'name': 'sequences', 'url': {str(url)!r}}}}})\n"
        "plan = read_plan(spec)\n"
        "adapt(spec, plan)\n"
        "print(json.dumps([plan.kind, sorted(sys.modules)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    kind, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert kind == "folds"  # the data was read and planned (60 sequences: cross-validation)
    assert "ray.tune" in loaded and "mlflow" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in ("torch", "pytorch_lightning")]
    assert not heavy, heavy[:5]


def _trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=s) for s in statuses]


def test_the_training_stack_is_imported_once_the_last_trial_has_started(monkeypatch):
    """Registering needs torch: imported while the last trials run, not beside the first ones."""
    imported = []
    monkeypatch.setattr(driver, "_import_training_stack", lambda: imported.append(True))
    warm_up = driver.WarmUpForTheEnd(trials=3, search_budget_s=None)
    warm_up.on_step_begin(0, _trials("RUNNING", "PENDING"))
    warm_up.on_step_begin(1, _trials("RUNNING", "RUNNING"))  # the third not made yet
    assert warm_up.thread is None
    warm_up.on_step_begin(2, _trials("TERMINATED", "RUNNING", "RUNNING"))
    warm_up.thread.join(5)
    warm_up.on_step_begin(3, _trials("TERMINATED", "TERMINATED", "RUNNING"))
    assert imported == [True]  # once


def test_a_search_until_its_budget_imports_it_before_the_budget_ends(monkeypatch):
    imported = []
    monkeypatch.setattr(driver, "_import_training_stack", lambda: imported.append(True))
    long = driver.WarmUpForTheEnd(trials=None, search_budget_s=600)
    long.on_step_begin(0, _trials("RUNNING", "RUNNING"))
    assert long.thread is None  # its trials keep coming for minutes
    short = driver.WarmUpForTheEnd(trials=None, search_budget_s=driver.WarmUpForTheEnd.LEAD_S)
    short.on_step_begin(0, _trials("RUNNING", "PENDING"))
    short.thread.join(5)
    assert imported == [True]


def test_a_grid_search_counts_its_cells_not_its_samples(monkeypatch):
    """`search.num_samples: 1` of a 4-cell grid is 4 trials (tune.space.trial_count)."""
    from tune.space import trial_count
    from tune.spec import parse_job_spec

    imported = []
    monkeypatch.setattr(driver, "_import_training_stack", lambda: imported.append(True))
    spec = parse_job_spec(
        {
            "data": {"name": "digits"},
            "search_space": {"hidden_size": {"grid": [8, 16, 32, 64]}},
            "search": {"num_samples": 1},
        }
    )
    warm_up = driver.WarmUpForTheEnd(trial_count(spec), search_budget_s=None)
    warm_up.on_step_begin(0, _trials("RUNNING", "RUNNING"))
    assert warm_up.thread is None and imported == []
