"""Admission limits that hold: ceilings computed from the spec (quotas: test_store.py)."""

from __future__ import annotations

import pytest

from lightning_modules.models import SequenceModel
from service.ceilings import ceiling_problems, largest_model
from service.settings import Settings
from tune.spec import parse_job_spec


def _spec(**sections):
    return parse_job_spec({"data": {"name": "digits"}, "search_space": {}, **sections})


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameter_count_from_the_spec_matches_the_built_network(cell, bidirectional):
    model = {"cell_type": cell, "hidden_size": 20, "num_layers": 3, "bidirectional": bidirectional}
    net = SequenceModel(8, 10, **model)
    assert largest_model(_spec(model=model)) == sum(p.numel() for p in net.parameters())


def test_largest_model_of_a_search_space_counts():
    space = {"hidden_size": {"choice": [16, 4096]}, "cell_type": {"choice": ["gru", "lstm"]}}
    small = _spec(model={"hidden_size": 16, "cell_type": "gru"})
    assert largest_model(_spec(search_space=space)) > 100 * largest_model(small)


@pytest.mark.parametrize(
    "sections, field, reason",
    [
        (
            {"model": {"num_layers": 16, "hidden_size": 8192}},
            "model.hidden_size",
            "parameters, the limit is 20,000,000",
        ),
        (
            {
                "search_space": {
                    "hidden_size": {"choice": [32, 8192]},
                    "num_layers": {"choice": [1, 16]},
                }
            },
            "search_space.hidden_size",
            "parameters",
        ),
        ({"trainer": {"threads": 100000}}, "trainer.threads", "the trial's CPUs are 1"),
        (
            {"data": {"name": "mnist1d", "num_samples": 10**10}},
            "data.num_samples",
            "the limit is 1,000,000",
        ),
        ({"data": {"name": "adding", "seq_len": 10**6}}, "data.seq_len", "steps per sequence"),
        ({"data": {"name": "copy", "delay": 50_000}}, "data.delay", "steps per sequence"),
        (
            {"data": {"name": "sequences", "url": "s3://b/x", "max_len": 10**6}},
            "data.max_len",
            "steps",
        ),
    ],
)
def test_ceilings_name_the_field_and_the_limit(sections, field, reason):
    problems = dict(ceiling_problems(_spec(**sections), Settings()))
    assert field in problems and reason in problems[field], problems


def test_ordinary_jobs_are_within_every_ceiling():
    for data in ({"name": "mnist1d"}, {"name": "text", "url": "s3://b/t.txt"}, {"name": "copy"}):
        assert ceiling_problems(parse_job_spec({"data": data}), Settings()) == []
