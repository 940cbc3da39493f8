"""Job spec -> Ray Tune objects: search spaces, schedulers, searchers, per-trial resources.

Building these objects needs no Ray runtime; nothing here starts one.
"""

from __future__ import annotations

from typing import Any

import pytest
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.sample import Categorical, Float, Integer

from tests.support.paths import ROOT
from tune import schedulers as S
from tune.space import Choice, Grid, LogUniform, RandInt, Uniform
from tune.spec import load_job_spec, parse_job_spec

BASE = {"name": "t", "data": {"name": "digits"}}


def _spec(**extra: Any):
    return parse_job_spec({**BASE, **extra})


def test_to_tune_maps_each_distribution_to_its_domain():
    lr = S.to_tune(LogUniform(loguniform=(1e-3, 1e-1)))
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-3, 1e-1)
    assert type(lr.get_sampler()).__name__ == "_LogUniform"
    drop = S.to_tune(Uniform(uniform=(0.0, 0.5)))
    assert isinstance(drop, Float) and (drop.lower, drop.upper) == (0.0, 0.5)
    assert type(drop.get_sampler()).__name__ == "_Uniform"
    cells = S.to_tune(Choice(choice=["gru", "lstm"]))
    assert isinstance(cells, Categorical) and cells.categories == ["gru", "lstm"]
    assert S.to_tune(Grid(grid=[1, 2])) == {"grid_search": [1, 2]}


def test_to_tune_randint_includes_the_high_end():
    hidden = S.to_tune(RandInt(randint=(100, 300)))
    # Tune's randint excludes its upper bound; the spec's includes it.
    assert isinstance(hidden, Integer) and (hidden.lower, hidden.upper) == (100, 301)


def test_to_tune_choice_becomes_a_grid_axis_under_grid_search():
    assert S.to_tune(Choice(choice=[1, 2, 3]), grid=True) == {"grid_search": [1, 2, 3]}
    assert S.to_tune(Grid(grid=["a"]), grid=False) == {"grid_search": ["a"]}


@pytest.mark.parametrize("value", [0.01, 3, "gru", True, None])
def test_to_tune_fixed_value_passes_through(value):
    out = S.to_tune(value)
    assert out == value and type(out) is type(value)


def test_param_space_covers_searched_and_keeps_fixed_values():
    spec = _spec(
        search_space={
            "lr": {"loguniform": [0.001, 0.01]},
            "hidden_size": {"randint": [16, 64]},
            "cell_type": {"choice": ["gru", "lstm"]},
            "num_layers": 2,
            "bidirectional": True,
        }
    )
    space = S.param_space(spec)
    assert set(space) == {"lr", "hidden_size", "cell_type", "num_layers", "bidirectional"}
    assert isinstance(space["lr"], Float) and isinstance(space["hidden_size"], Integer)
    assert isinstance(space["cell_type"], Categorical)
    assert space["num_layers"] == 2 and space["bidirectional"] is True  # fixed: not searched
    # Fields left out of search_space are not in the space: the spec's fixed settings hold them.
    assert "batch_size" not in space and "dropout" not in space


def test_param_space_defaults_to_the_seed_space_when_none_given():
    space = S.param_space(_spec())
    assert set(space) == {"cell_type", "num_layers", "hidden_size", "grad_clip"}
    assert set(space["cell_type"].categories) == {"rnn_tanh", "rnn_relu", "lstm", "gru"}
    assert space["num_layers"].categories == [2, 3, 4]
    assert (space["grad_clip"].lower, space["grad_clip"].upper) == (0.1, 10.0)


def test_param_space_under_grid_search_makes_choices_grid_axes():
    spec = _spec(
        search={"algorithm": "grid"},
        search_space={"cell_type": {"choice": ["gru", "lstm"]}, "num_layers": {"grid": [1, 2]}},
    )
    assert S.param_space(spec) == {
        "cell_type": {"grid_search": ["gru", "lstm"]},
        "num_layers": {"grid_search": [1, 2]},
    }


def test_param_space_of_an_example_spec_covers_its_search_space():
    spec = load_job_spec(ROOT / "examples" / "japanese_vowels.yaml")
    space = S.param_space(spec)
    assert set(space) == set(spec.search_space)
    assert (space["lr"].lower, space["lr"].upper) == (0.001, 0.01)  # the default space


@pytest.mark.parametrize(
    "name,cls",
    [
        ("fifo", FIFOScheduler),
        ("asha", AsyncHyperBandScheduler),
        ("hyperband", HyperBandScheduler),
        ("median", MedianStoppingRule),
        ("pbt", PopulationBasedTraining),
    ],
)
def test_scheduler_builds_the_named_ray_class(name, cls):
    sched = S.scheduler(_spec(scheduler={"name": name}))
    assert type(sched) is cls


def test_scheduler_asha_runs_to_past_the_last_epoch_with_the_spec_grace_and_factor():
    sched = S.scheduler(
        _spec(
            scheduler={"name": "asha", "grace_period": 2, "reduction_factor": 4},
            budget={"max_epochs": 20},
        )
    )
    assert sched._max_t == 21 and sched._reduction_factor == 4
    milestones = [m for bracket in sched._brackets for m, _ in bracket._rungs]
    assert min(milestones) == 2 and max(milestones) < 21


def test_scheduler_asha_grace_period_is_capped_at_the_epochs():
    sched = S.scheduler(
        _spec(scheduler={"name": "asha", "grace_period": 50}, budget={"max_epochs": 4})
    )
    milestones = [m for bracket in sched._brackets for m, _ in bracket._rungs]
    assert sched._max_t == 5 and milestones == [4]


def test_scheduler_asha_epochs_default_to_the_trainer_max_epochs():
    sched = S.scheduler(_spec(trainer={"max_epochs": 7, "diagnostics": False}))
    assert sched._max_t == 8


def test_scheduler_hyperband_uses_the_budget_epochs_and_factor():
    sched = S.scheduler(
        _spec(scheduler={"name": "hyperband", "reduction_factor": 2}, budget={"max_epochs": 9})
    )
    assert sched._max_t_attr == 9 and sched._eta == 2


def test_scheduler_median_takes_the_grace_period():
    sched = S.scheduler(_spec(scheduler={"name": "median", "grace_period": 4}))
    assert sched._grace_period == 4 and sched._min_samples_required == 3


def test_scheduler_pbt_takes_interval_fraction_synch_and_mutations():
    spec = _spec(
        scheduler={
            "name": "pbt",
            "perturbation_interval": 3,
            "quantile_fraction": 0.5,
            "synch": True,
        },
        search_space={"lr": {"loguniform": [0.002, 0.02]}},
    )
    sched = S.scheduler(spec)
    assert sched._perturbation_interval == 3 and sched._quantile_fraction == 0.5 and sched._synch
    lr = sched._hyperparam_mutations["lr"]
    assert (lr.lower, lr.upper) == (0.002, 0.02)  # the spec's range, not the default


def test_scheduler_leaves_metric_and_mode_to_the_tuner():
    # TuneConfig sets the job's metric and mode on the scheduler; a second source would conflict.
    for name in ("asha", "hyperband", "median", "pbt"):
        sched = S.scheduler(_spec(scheduler={"name": name}, metric="val_loss", mode="min"))
        assert sched._metric is None and sched._mode is None, name


def test_pbt_mutations_use_defaults_only_for_keys_outside_the_space_that_apply():
    spec = _spec(scheduler={"name": "pbt"}, search_space={"hidden_size": {"choice": [32, 64]}})
    muts = S._pbt_mutations(spec)
    # No clipping set: PBT does not turn it on. One layer and num_layers not searched: dropout
    # between layers does nothing. So lr alone, over its default range.
    assert set(muts) == {"lr"}
    assert (muts["lr"].lower, muts["lr"].upper) == (1e-4, 1e-1)
    clipped = S._pbt_mutations(
        _spec(scheduler={"name": "pbt"}, optim={"grad_clip": 2.0}, search_space={"hidden_size": 32})
    )
    assert (clipped["grad_clip"].lower, clipped["grad_clip"].upper) == (0.1, 10.0)


def test_pbt_leaves_a_value_the_search_space_fixes_alone():
    spec = _spec(
        scheduler={"name": "pbt"},
        optim={"grad_clip": 2.0},
        search_space={"lr": 0.01, "grad_clip": {"loguniform": [0.5, 2.0]}},
    )
    assert set(S._pbt_mutations(spec)) == {"grad_clip"}
    assert S.pbt_initial_space(spec)["lr"] == 0.01


def test_pbt_with_nothing_to_explore_is_refused_by_name():
    with pytest.raises(ValueError, match="scheduler.name: pbt explores lr, grad_clip or dropout"):
        _spec(scheduler={"name": "pbt"}, search_space={"lr": 0.01})


def test_pbt_default_ranges_are_said_once_by_name():
    notes = _spec(
        scheduler={"name": "pbt"}, optim={"grad_clip": 2.0}, search_space={"hidden_size": 32}
    ).ignored_settings()
    assert [n for n in notes if "PBT" in n] == [
        "optim.lr: PBT explores it over loguniform(0.0001, 0.1), a default range "
        "(search_space.lr: a range to change it, a value to keep it fixed)",
        "optim.grad_clip: PBT explores it over loguniform(0.1, 10), a default range "
        "(search_space.grad_clip: a range to change it, a value to keep it fixed)",
    ]
    ranged = _spec(scheduler={"name": "pbt"}, search_space={"lr": {"uniform": [0.01, 0.02]}})
    assert not [n for n in ranged.ignored_settings() if "PBT" in n]


def test_pbt_mutations_take_the_spec_ranges_over_the_defaults():
    spec = _spec(
        scheduler={"name": "pbt"},
        search_space={"lr": {"uniform": [0.01, 0.02]}, "grad_clip": {"loguniform": [0.5, 2.0]}},
    )
    muts = S._pbt_mutations(spec)
    assert (muts["lr"].lower, muts["lr"].upper) == (0.01, 0.02)
    assert type(muts["lr"].get_sampler()).__name__ == "_Uniform"
    assert (muts["grad_clip"].lower, muts["grad_clip"].upper) == (0.5, 2.0)
    # The seed's default space searches 2-4 layers, so dropout is mutated there.
    assert "dropout" in S._pbt_mutations(_spec(scheduler={"name": "pbt"}))
    # grid values are mutated as choices (a grid is not a domain PBT can sample)
    grid = _spec(scheduler={"name": "pbt"}, search_space={"lr": {"grid": [0.01, 0.1]}})
    assert S._pbt_mutations(grid)["lr"].categories == [0.01, 0.1]


def test_pbt_mutations_include_dropout_with_several_layers():
    stacked = S._pbt_mutations(
        _spec(scheduler={"name": "pbt"}, model={"num_layers": 2}, search_space={"hidden_size": 32})
    )
    assert set(stacked) == {"lr", "dropout"}
    assert (stacked["dropout"].lower, stacked["dropout"].upper) == (0.0, 0.5)
    searched = S._pbt_mutations(
        _spec(
            scheduler={"name": "pbt"},
            search_space={"num_layers": {"choice": [1, 2]}, "dropout": {"uniform": [0.1, 0.3]}},
        )
    )
    assert (searched["dropout"].lower, searched["dropout"].upper) == (0.1, 0.3)


def test_pbt_initial_space_holds_every_mutated_key():
    spec = _spec(
        scheduler={"name": "pbt"},
        model={"num_layers": 2, "dropout": 0.25},
        optim={"lr": 0.005, "grad_clip": 3.0},
        search_space={"hidden_size": {"choice": [32, 64]}},
    )
    space = S.pbt_initial_space(spec)
    assert set(space) == {"hidden_size", "lr", "grad_clip", "dropout"}
    assert isinstance(space["hidden_size"], Categorical)
    # Keys outside the search space start at the spec's fixed settings.
    assert space["lr"] == 0.005 and space["dropout"] == 0.25 and space["grad_clip"] == 3.0


def test_pbt_initial_space_keeps_searched_keys_as_domains():
    spec = _spec(scheduler={"name": "pbt"}, search_space={"lr": {"loguniform": [0.002, 0.02]}})
    space = S.pbt_initial_space(spec)
    assert isinstance(space["lr"], Float) and (space["lr"].lower, space["lr"].upper) == (
        0.002,
        0.02,
    )
    assert "grad_clip" not in space and "dropout" not in space


def test_search_algorithm_random_is_seeded_and_limited():
    gen = S.search_algorithm(_spec(search={"seed": 7, "max_concurrent": 3}))
    assert isinstance(gen, BasicVariantGenerator)
    assert gen.max_concurrent == 3 and gen._random_state is not None
    assert S.search_algorithm(_spec()).max_concurrent == 0  # 0: no limit
    assert S.search_algorithm(_spec(search={"max_concurrent": 3}), 2).max_concurrent == 2


def test_search_algorithm_optuna_takes_the_spec_metric_and_mode():
    spec = _spec(search={"algorithm": "optuna"}, metric="val_loss", mode="min")
    searcher = S.search_algorithm(spec)
    assert type(searcher).__name__ == "OptunaSearch"
    assert (searcher.metric, searcher.mode) == ("val_loss", "min")
    default = S.search_algorithm(_spec(search={"algorithm": "optuna"}))
    assert (default.metric, default.mode) == ("val_acc", "max")


def test_search_algorithm_optuna_with_a_limit_is_wrapped():
    spec = _spec(search={"algorithm": "optuna", "max_concurrent": 2})
    limited = S.search_algorithm(spec)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2
    assert (limited.searcher.metric, limited.searcher.mode) == ("val_acc", "max")
    assert S.search_algorithm(spec, 5).max_concurrent == 5


def test_trial_resources_follow_the_spec():
    assert S.trial_resources(_spec()) == {"cpu": 1.0, "gpu": 0.0}
    assert S.trial_resources(_spec(resources={"cpus": 2, "gpus": 0.5})) == {"cpu": 2, "gpu": 0.5}


def test_trial_resources_of_multi_worker_trials_reserve_nearly_nothing():
    spec = _spec(resources={"workers": 4, "cpus": 2, "gpus": 1})
    assert S.trial_resources(spec) == {"cpu": 0, "gpu": 0, "memory": 1}


@pytest.mark.parametrize(
    "resources,search,cluster,expected",
    [
        ({"workers": 1}, {}, {"CPU": 64.0}, None),
        ({"workers": 1}, {"max_concurrent": 2}, {"CPU": 64.0}, 2),
        ({"workers": 2, "cpus": 2}, {}, {"CPU": 9.0}, 2),
        ({"workers": 2, "cpus": 2}, {}, {"CPU": 1.0}, 1),
        ({"workers": 2, "cpus": 1, "gpus": 1}, {}, {"CPU": 64.0, "GPU": 3.0}, 1),
        ({"workers": 2, "cpus": 1, "gpus": 1}, {}, {"CPU": 64.0}, 1),
        ({"workers": 4, "cpus": 1}, {"max_concurrent": 5}, {"CPU": 4.0}, 5),
    ],
)
def test_concurrency_limit_fits_whole_trials(resources, search, cluster, expected):
    spec = _spec(resources=resources, search=search)
    assert S.concurrency_limit(spec, cluster) == expected


@pytest.mark.parametrize("name", ["asha", "hyperband", "median", "pbt"])
def test_scheduler_counts_epochs_not_seconds(name):
    # grace_period and perturbation_interval are epochs (one report each); Ray's median and PBT
    # schedulers count seconds of training (`time_total_s`) unless told otherwise.
    sched = S.scheduler(_spec(scheduler={"name": name}))
    assert sched._time_attr == "training_iteration"
