"""Job spec: distributions, defaults, and field-level errors for bad searches."""

from __future__ import annotations

import pytest

from lightning_modules.config import SpecError
from tests.support.paths import ROOT
from tune.space import Choice, LogUniform, grid_size
from tune.spec import JobSpec, load_job_spec, parse_job_spec

BASE = {"name": "t", "data": {"name": "digits"}}


def test_example_job_spec_loads():
    spec = load_job_spec(ROOT / "examples" / "mnist1d.yaml")
    assert spec.search.num_samples == 12 and spec.scheduler.name == "asha"
    assert spec.monitor == ("val_acc", "max")
    assert isinstance(spec.space["cell_type"], Choice)
    trial = spec.trial_spec({"cell_type": "gru", "lr": 0.005, "hidden_size": 64})
    assert trial.model.cell_type == "gru" and trial.model.bidirectional
    assert trial.trainer.max_epochs == spec.budget.max_epochs


def test_default_search_space_follows_seed():
    spec = parse_job_spec(BASE)
    space = spec.space
    assert set(space["cell_type"].choice) == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert space["num_layers"].choice == [2, 3, 4]
    assert space["grad_clip"] == LogUniform(loguniform=(0.1, 10.0))
    text = parse_job_spec({"data": {"name": "text", "url": "x.txt"}})
    assert text.space["hidden_size"].randint == (100, 300)
    assert text.monitor == ("val_bpc", "min")
    assert parse_job_spec({"data": {"name": "adding"}}).monitor == ("val_loss", "min")


def test_grid_size_counts_every_combination():
    spec = parse_job_spec(
        {
            **BASE,
            "search": {"algorithm": "grid", "num_samples": 2},
            "search_space": {
                "cell_type": {"grid": ["lstm", "gru"]},
                "num_layers": {"choice": [1, 2, 3]},
            },
        }
    )
    assert grid_size(spec) == 12


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (
            {"search_space": {"cell_type": {"choice": ["lstm", "lstn"]}}},
            "search_space.cell_type: value 'lstn'",
        ),
        (
            {"search_space": {"hidden_size": {"randint": [0, 10]}}},
            "search_space.hidden_size: value 0",
        ),
        ({"search_space": {"grad_clip": {"loguniform": [-1, 10]}}}, "search_space.grad_clip"),
        ({"search_space": {"lr": {"uniform": [0.1, 0.01]}}}, "low 0.1 is above high 0.01"),
        (
            {"search_space": {"colour": {"choice": [1]}}},
            "search_space.colour: not a searchable field",
        ),
        ({"search_space": {"lr": {"normal": [0, 1]}}}, "search_space.lr"),
        (
            {"search": {"algorithm": "grid"}, "search_space": {"lr": {"uniform": [0.001, 0.01]}}},
            "grid needs",
        ),
        (
            {"search": {"algorithm": "optuna"}, "search_space": {"lr": {"grid": [0.1]}}},
            "optuna cannot take grid",
        ),
        ({"scheduler": {"name": "bohb"}}, "scheduler.name"),
        ({"scheduler": {"name": "asha", "reduction_factor": 1}}, "scheduler.reduction_factor"),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"budget": {"max_epochs": 0}}, "budget.max_epochs"),
        ({"metric": "val_bpc"}, "metric: 'val_bpc' is not reported"),
        ({"name": "bad name!"}, "name:"),
        ({"searchspace": {}}, "searchspace: unknown field; did you mean search_space?"),
        (
            {"search_space": {"lrr": 0.1}},
            "search_space.lrr: not a searchable field; did you mean lr?",
        ),
        ({"scheduler": {"grace": 2}}, "scheduler.grace: unknown field; did you mean grace_period?"),
        ({"search": {"num_samples": 0}}, "search.num_samples"),
        ({"optim": {"optimizer": "ftrl"}}, "optim.optimizer: ftrl is TensorFlow-only"),
    ],
)
def test_bad_job_spec_names_field(extra, fragment):
    with pytest.raises(SpecError) as e:
        parse_job_spec({**BASE, **extra})
    assert fragment in str(e.value), str(e.value)


def test_job_spec_schema_is_json_schema():
    schema = JobSpec.model_json_schema()
    assert {"data", "search_space", "scheduler", "resources", "storage"} <= set(
        schema["properties"]
    )


def test_job_names_settings_some_trials_cannot_use():
    job = parse_job_spec(
        {
            "data": {"name": "digits"},
            "model": {"dropout": 0.2},
            "trainer": {"threads": 2},
            "search_space": {"num_layers": {"choice": [1, 2]}},
        }
    )
    notes = job.ignored_settings()
    assert [n.split(":")[0] for n in notes] == ["model.dropout", "trainer.threads"]
    assert "trials with num_layers 1 run without it" in notes[0]
    assert "resources.cpus (1)" in notes[1]
    stacked = parse_job_spec({"data": {"name": "digits"}, "search_space": {"num_layers": 2}})
    assert stacked.ignored_settings() == []


@pytest.mark.parametrize("name", ["AAA", 7, None, {}, []])
def test_an_unknown_dataset_is_named_not_a_crash(name):
    with pytest.raises(SpecError, match="data"):
        parse_job_spec({"data": {"name": name, "url": "x"}})
