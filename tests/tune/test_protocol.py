"""The search protocol on small data: fixed values stay fixed, data-sized trials, the budget."""

from __future__ import annotations

import pytest

from lightning_modules.data.splits import plan_validation
from tune import schedulers
from tune.protocol import MIN_STEPS, adapt, final_reserve, search_time_budget, small_data_batch
from tune.space import Distribution, searching_line, trial_count
from tune.spec import parse_job_spec

SEQ = {"name": "sequences", "url": "d.parquet"}


def test_default_space_searches_only_what_the_spec_left_out():
    spec = parse_job_spec({"data": SEQ, "model": {"cell_type": "gru", "hidden_size": 32}})
    searched = {k for k, v in spec.space.items() if isinstance(v, Distribution)}
    assert "cell_type" not in searched and "hidden_size" not in searched
    assert {"num_layers", "bidirectional", "lr", "grad_clip"} <= searched
    trial = spec.trial_spec({k: v.choice[0] for k, v in spec.space.items() if hasattr(v, "choice")})
    assert trial.model.cell_type == "gru" and trial.model.hidden_size == 32
    # The resolved space travels with the spec: a JSON round trip (service -> cluster) keeps it
    again = parse_job_spec(spec.model_dump(mode="json"))
    assert again.space == spec.space
    line = searching_line(spec)
    assert "num_layers choice(1, 2)" in line and "cell_type" not in line


def test_time_budget_alone_samples_until_it_is_spent():
    spec = parse_job_spec({"data": SEQ, "budget": {"time_budget_s": 300}})
    assert spec.samples == -1 and trial_count(spec) is None
    assert "until the 300 s budget is spent" in searching_line(spec)
    capped = parse_job_spec(
        {"data": SEQ, "budget": {"time_budget_s": 300}, "search": {"num_samples": 5}}
    )
    assert capped.samples == 5 and trial_count(capped) == 5
    assert parse_job_spec({"data": SEQ}).samples == 8  # no budget: the old default
    # The searcher creates a trial only when one can run, not an endless pending queue
    assert schedulers.concurrency_limit(spec, {"CPU": 2.0}) == 2
    assert schedulers.concurrency_limit(capped, {"CPU": 2.0}) is None


def test_the_search_leaves_room_for_what_follows_it():
    spec = parse_job_spec({"data": SEQ, "budget": {"time_budget_s": 300}})
    left = search_time_budget(spec, elapsed_s=12.0)
    assert left == pytest.approx(300 - 12 - final_reserve(300))
    assert 0 < final_reserve(300) <= 0.1 * 300  # the job ends within 10% of its budget
    assert search_time_budget(parse_job_spec({"data": SEQ}), 12.0) is None


def test_tiny_data_gets_steps_not_one_step_epochs():
    spec = parse_job_spec({"data": SEQ, "budget": {"time_budget_s": 300}})
    plan = plan_validation("auto", 0.1, 40, [10, 10, 10, 10], None)  # 5 folds of 8
    adapted, protocol = adapt(spec, plan)
    batch = adapted.optim.batch_size
    assert batch == small_data_batch(plan.train_size) == 8  # never 64 on 32 sequences
    steps_per_epoch = -(-plan.train_size // batch)
    assert adapted.max_epochs * steps_per_epoch >= MIN_STEPS
    assert adapted.scheduler.grace_period >= adapted.max_epochs // 10 > 1
    assert any("5-fold cross-validation" in n for n in protocol.notes)
    assert adapted.trial_spec({}).trainer.max_epochs == adapted.max_epochs


def test_what_the_spec_sets_is_kept():
    spec = parse_job_spec(
        {
            "data": SEQ,
            "optim": {"batch_size": 16},
            "trainer": {"max_epochs": 7},
            "scheduler": {"name": "asha", "grace_period": 2},
        }
    )
    adapted, _ = adapt(spec, plan_validation("auto", 0.1, 40, [20, 20], None))
    assert adapted.optim.batch_size == 16 and adapted.max_epochs == 7
    assert adapted.scheduler.grace_period == 2
    # Built-in datasets keep their own protocol
    digits = parse_job_spec({"data": {"name": "digits"}})
    assert adapt(digits, None)[0] == digits


def test_a_small_fixed_validation_split_warns_at_the_start():
    spec = parse_job_spec({"data": {**SEQ, "val_url": "v.parquet"}})
    _, protocol = adapt(spec, plan_validation("auto", 0.1, 200, None, 3))
    assert any(n.startswith("warning: validation:") and "3 sequences" in n for n in protocol.notes)


def test_long_sequences_search_patching_short_ones_do_not():
    from dataclasses import replace

    from tune.protocol import patch_choices

    assert patch_choices(29) == [1] and patch_choices(24) == [1]
    assert patch_choices(100) == [1, 2, 4, 8] and patch_choices(150) == [1, 2, 4, 8]
    assert patch_choices(251) == [1, 2, 4, 8, 16]
    plan = replace(plan_validation("auto", 0.1, 50, [5] * 10, None), median_steps=150.0)
    spec = parse_job_spec({"data": SEQ, "budget": {"time_budget_s": 60}})
    adapted, protocol = adapt(spec, plan)
    assert adapted.space["patch"].choice == [1, 2, 4, 8]
    assert any(n.startswith("model.patch: searched over [1, 2, 4, 8]") for n in protocol.notes)
    assert "patch choice(1, 2, 4, 8)" in searching_line(adapted)
    assert adapted.trial_spec({"patch": 4}).model.patch == 4
    # What the user fixed or searched themselves is left as it is
    fixed = parse_job_spec({"data": SEQ, "model": {"patch": 2}})
    assert "patch" not in adapt(fixed, plan)[0].space
    own = parse_job_spec({"data": SEQ, "search_space": {"hidden_size": {"choice": [16, 32]}}})
    assert "patch" not in adapt(own, plan)[0].space
    short = replace(plan, median_steps=29.0)
    assert "patch" not in adapt(spec, short)[0].space
