"""Translate the job spec into Ray Tune objects: param space, trial scheduler, search algorithm,
and the resources and concurrency of trials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune as ray_tune
from ray.tune.schedulers import (
    AsyncHyperBandScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher

from tune.space import Choice, Grid, LogUniform, RandInt, SearchValue, Uniform
from tune.spec import JobSpec


def to_tune(dist: SearchValue, grid: bool = False) -> Any:
    """One spec value as a Ray Tune domain (choices become grid axes under grid search)."""
    match dist:
        case Grid(grid=v):
            return ray_tune.grid_search(list(v))
        case Choice(choice=v):
            return ray_tune.grid_search(list(v)) if grid else ray_tune.choice(list(v))
        case Uniform(uniform=(lo, hi)):
            return ray_tune.uniform(lo, hi)
        case LogUniform(loguniform=(lo, hi)):
            return ray_tune.loguniform(lo, hi)
        case RandInt(randint=(lo, hi)):
            return ray_tune.randint(lo, hi + 1)  # Tune's upper bound is exclusive
    return dist


def param_space(spec: JobSpec) -> dict[str, Any]:
    grid = spec.search.algorithm == "grid"
    return {key: to_tune(dist, grid) for key, dist in spec.space.items()}


def _pbt_mutations(spec: JobSpec) -> dict[str, Any]:
    """What PBT explores (`JobSpec.pbt_explored`), as Tune domains."""
    return {key: to_tune(dist) for key, (dist, _) in spec.pbt_explored().items()}


def scheduler(spec: JobSpec) -> TrialScheduler:
    s, epochs = spec.scheduler, spec.max_epochs
    match s.name:
        case "asha":
            # max_t above the last epoch: a trial reaching the end finishes on its own terms.
            return AsyncHyperBandScheduler(
                max_t=epochs + 1,
                grace_period=min(s.grace_period, epochs),
                reduction_factor=s.reduction_factor,
            )
        case "hyperband":
            return HyperBandScheduler(max_t=epochs, reduction_factor=s.reduction_factor)
        case "median":
            # Every scheduler counts epochs (one report per epoch), not Ray's default for these
            # two, seconds of training time (`time_total_s`).
            return MedianStoppingRule(
                time_attr="training_iteration",
                grace_period=s.grace_period,
                min_samples_required=3,
            )
        case "pbt":
            return PopulationBasedTraining(
                time_attr="training_iteration",
                perturbation_interval=s.perturbation_interval,
                hyperparam_mutations=_pbt_mutations(spec),
                quantile_fraction=s.quantile_fraction,
                synch=s.synch,
            )
    return FIFOScheduler()


def search_algorithm(spec: JobSpec, limit: int | None = None) -> Searcher | BasicVariantGenerator:
    """`limit`: trials at once (`concurrency_limit`); default `search.max_concurrent`."""
    limit = limit or spec.search.max_concurrent
    if spec.search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        metric, mode = spec.monitor
        searcher = OptunaSearch(metric=metric, mode=mode, seed=spec.search.seed)
        return ConcurrencyLimiter(searcher, max_concurrent=limit) if limit else searcher
    return BasicVariantGenerator(random_state=spec.search.seed, max_concurrent=limit or 0)


def pbt_initial_space(spec: JobSpec) -> dict[str, Any]:
    """PBT needs every mutated key in the initial config too: those outside the search space
    start at the spec's fixed setting."""
    space = param_space(spec)
    base = spec.base_train_spec()
    for key in _pbt_mutations(spec):
        if key not in space:
            space[key] = base.model.dropout if key == "dropout" else getattr(base.optim, key)
    return space


def trial_resources(spec: JobSpec) -> dict[str, float]:
    """What Tune reserves per trial.

    A multi-worker trial's function only drives a Ray Train run, whose workers reserve the CPUs
    and GPUs themselves (in their own placement group); it asks for a byte of memory because Tune
    needs some resource, and any CPU it held could keep the workers off a node they fill exactly.
    """
    r = spec.resources
    if r.workers > 1:
        return {"cpu": 0, "gpu": 0, "memory": 1}
    return {"cpu": r.cpus, "gpu": r.gpus}


def concurrency_limit(spec: JobSpec, cluster: Mapping[str, float]) -> int | None:
    """Trials at once: `search.max_concurrent`; unset, for multi-worker trials as many as the
    cluster fits whole (at least one).

    Their functions reserve nearly nothing, so Tune alone would start every trial at once and
    each Train run would wait for (and hold part of) the workers' resources.
    """
    r = spec.resources
    if spec.search.max_concurrent is not None:
        return spec.search.max_concurrent
    if r.workers == 1:
        if spec.samples >= 0:
            return None
        # Sampling until the budget is spent: the searcher makes a trial only when one fits,
        # else Tune would create an endless queue of pending trials at the start
        fits = [cluster.get("CPU", 1.0) // r.cpus]
        if r.gpus > 0:
            fits.append(cluster.get("GPU", 0.0) // r.gpus)
        return max(1, int(min(fits)))
    fits = [cluster.get("CPU", 0.0) // (r.workers * r.cpus)]
    if r.gpus > 0:
        fits.append(cluster.get("GPU", 0.0) // (r.workers * r.gpus))
    return max(1, int(min(fits)))
