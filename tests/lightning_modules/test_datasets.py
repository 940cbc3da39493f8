"""The dataset registry: one entry per dataset, and adding one is a module plus a line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_modules.config import TrainSpec
from lightning_modules.datasets import DATASETS, MODULES, dataset_of
from tests.support.paths import ROOT
from tune.spec import parse_job_spec

PACKAGES = ("lightning_modules", "tune", "service", "deploy")

TOY_MODULE = '''\
"""A toy dataset: does a noisy walk of two features end above zero on its first feature?"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import Section


class ToyData(Section):
    name: Literal["toy"] = "toy"
    examples: int = Field(600, ge=10)
    steps: int = Field(12, ge=2)


def build(cfg: ToyData, seed: int):
    from lightning_modules.data.base import SequenceData, to_split
    from lightning_modules.data.splits import split_train_val

    rng = np.random.default_rng(0)  # the data never moves with the run's seed
    x = rng.normal(size=(cfg.examples, cfg.steps, 2)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    n_test = cfg.examples // 5
    (xt, yt), (xv, yv) = split_train_val(x[n_test:], y[n_test:], 0.2, seed)
    return SequenceData(
        train=to_split(xt, yt),
        val=to_split(xv, yv),
        test=to_split(x[:n_test], y[:n_test]),
        input_size=2,
        out_features=2,
        seq_len=cfg.steps,
    )


DATASET = Dataset(
    config=ToyData,
    task="classification",
    builder="lightning_modules.datasets.toy:build",
    inputs=lambda cfg: 2,
    outputs=lambda cfg: 2,
    search_space={"cell_type": {"choice": ["gru"]}, "hidden_size": {"choice": [8, 16]}},
    steps=lambda cfg: ("data.steps", cfg.steps),
)
'''

# Run in the copy with the toy added: the spec, the default search, the service's ceilings,
# the network's shape and training all learn of the dataset from its entry alone.
TOY_CHECKS = """
import json, sys
from lightning_modules.config import TrainSpec
from lightning_modules.training import train
from service.ceilings import ceiling_problems, largest_model
from service.settings import Settings
from tune.spec import parse_job_spec

job = parse_job_spec({"name": "toy-search", "data": {"name": "toy", "steps": 40}})
refused = ceiling_problems(job, Settings(max_sequence_length=30))
spec = TrainSpec.model_validate({
    "data": {"name": "toy"},
    "model": {"cell_type": "gru", "hidden_size": 16},
    "optim": {"lr": 0.01, "batch_size": 32},
    "trainer": {"max_epochs": 12, "diagnostics": False},
})
result = train(spec, sys.argv[1], logger=False, enable_progress_bar=False)
print(json.dumps({
    "task": job.task,
    "space": sorted(job.space),
    "largest": largest_model(job),
    "refused": refused,
    "test_acc": result.test["test_acc"],
    "digest": result.data_fingerprint,
}))
"""


def test_every_entry_resolves_and_its_default_search_validates():
    assert len(DATASETS) == len(MODULES)  # one entry per module, names unique
    for name, entry in DATASETS.items():
        assert dataset_of(name) is entry and callable(entry.build.__func__)
        assert callable(entry.datamodule_class())
        builder_module, builder = entry.builder.split(":")
        assert callable(getattr(__import__(builder_module, fromlist=[builder]), builder))
        space = parse_job_spec({"data": _minimal(name)}).space
        assert set(space) == set(entry.search_space), name


def test_per_step_and_varying_length_rules_come_from_the_entry():
    with pytest.raises(ValueError, match="model.patch.*copy predicts every step"):
        TrainSpec.model_validate({"data": {"name": "copy"}, "model": {"patch": 2}})
    with pytest.raises(ValueError, match="linear_all.*sequences vary in length"):
        TrainSpec.model_validate(
            {"data": {"name": "sequences", "url": "x.parquet"}, "model": {"readout": "linear_all"}}
        )
    applied = TrainSpec.model_validate({"data": {"name": "copy"}}).applied_settings()
    assert "readout" not in applied and "patch" not in applied
    assert "readout" in TrainSpec.model_validate({"data": {"name": "digits"}}).applied_settings()


@pytest.mark.slow
def test_adding_a_dataset_is_one_module_and_one_registry_line(tmp_path):
    tree = tmp_path / "tree"
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    registry = tree / "lightning_modules" / "datasets" / "__init__.py"
    before = registry.read_text()
    after = before.replace('    "sequences",\n', '    "sequences",\n    "toy",\n', 1)
    registry.write_text(after)
    (tree / "lightning_modules" / "datasets" / "toy.py").write_text(TOY_MODULE)

    assert _changed_lines(before, after) == ['    "toy",']  # the one registry line
    assert _differences(ROOT, tree) == ["lightning_modules/datasets/toy.py (new)"]

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TOY_CHECKS), str(tmp_path / "run")],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["task"] == "classification"
    assert found["space"] == ["cell_type", "hidden_size"]  # the toy's own default search
    gru_16 = 3 * (2 * 16 + 16 * 16 + 2 * 16) + (16 + 1) * 2  # its width 2 in, 2 classes out
    assert found["largest"] == gru_16
    assert found["refused"] == [["data.steps", "40 steps per sequence, the limit is 30"]]
    assert found["test_acc"] > 0.8, found  # chance is about 0.5
    assert len(found["digest"]) == 16


def _minimal(name: str) -> dict:
    return {"name": name, "url": "x.parquet"} if name in ("text", "sequences") else {"name": name}


def _changed_lines(before: str, after: str) -> list[str]:
    old = before.splitlines()
    return [line for line in after.splitlines() if line not in old]


def _differences(original: Path, copy: Path) -> list[str]:
    """The copy's source files that are new or differ, but for the registry."""
    found = []
    for path in sorted(copy.rglob("*.py")):
        rel = path.relative_to(copy)
        if rel.as_posix() == "lightning_modules/datasets/__init__.py":
            continue
        source = original / rel
        if not source.exists():
            found.append(f"{rel.as_posix()} (new)")
        elif source.read_bytes() != path.read_bytes():
            found.append(rel.as_posix())
    return found
