"""A job's start does not wait for torch: the driver and the data check import none of the
training stack before the search (tune/trials.py, lightning_modules/data/reading.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT
from tests.support.sequence_data import sensor_sequences, write_parquet


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
