"""A job's search space as the spec writes it (fixed values and distributions), the dataset's
default space, and how many trials a search of it runs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import Field, TypeAdapter

from lightning_modules.datasets import dataset_of
from lightning_modules.sections import Section

if TYPE_CHECKING:
    from tune.spec import JobSpec

Scalar = bool | int | float | str | None


class Choice(Section):
    choice: list[Scalar] = Field(min_length=1)


class Grid(Section):
    grid: list[Scalar] = Field(min_length=1)


class Uniform(Section):
    uniform: tuple[float, float]


class LogUniform(Section):
    loguniform: tuple[float, float]


class RandInt(Section):
    randint: tuple[int, int]
    """Integers from low to high, both included."""


Distribution = Choice | Grid | Uniform | LogUniform | RandInt
SearchValue = Distribution | Scalar


def describe_range(dist: SearchValue) -> str:
    """`loguniform(0.0001, 0.1)`, `choice(0.01, 0.1)`: a distribution as the spec writes it."""
    if isinstance(dist, Distribution):
        (kind, values), *_ = dist.model_dump().items()
        return f"{kind}({', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in values)})"
    return repr(dist)


def candidate_values(dist: SearchValue) -> list[Scalar]:
    """Values that stand for a distribution when checking it: every option, or both ends."""
    match dist:
        case Choice(choice=v) | Grid(grid=v):
            return list(v)
        case (
            Uniform(uniform=(lo, hi)) | LogUniform(loguniform=(lo, hi)) | RandInt(randint=(lo, hi))
        ):
            return [lo, hi]
    return [dist]


def default_search_space(dataset: str) -> dict[str, SearchValue]:
    """The dataset's default search space (its registry entry, `lightning_modules.datasets`)."""
    space = dataset_of(dataset).search_space
    return {k: _SEARCH_VALUE.validate_python(v) for k, v in space.items()}


_SEARCH_VALUE: TypeAdapter[SearchValue] = TypeAdapter(SearchValue)


def searching_line(spec: JobSpec) -> str:
    """`searching: cell_type choice(gru, lstm), ...; trials: until the time budget is spent`:
    what the job searches, said when it starts."""
    searched = [
        f"{k} {describe_range(v)}" for k, v in spec.space.items() if isinstance(v, Distribution)
    ]
    n = trial_count(spec)
    trials = (
        f"{n} trials"
        if n is not None
        else f"trials until the {spec.budget.time_budget_s:g} s budget is spent"
    )
    return f"searching: {', '.join(searched) or 'nothing (every value is fixed)'}; {trials}"


def trial_count(spec: JobSpec) -> int | None:
    """Trials the search will run: the grid's size for grid search; else the samples times
    the `grid:` axes, which Tune expands for every sample. None: until the budget is spent."""
    if spec.search.algorithm == "grid":
        return grid_size(spec)
    if spec.samples < 0:
        return None
    axes = [len(d.grid) for d in spec.space.values() if isinstance(d, Grid)]
    return math.prod(axes) * spec.samples


def grid_size(spec: JobSpec) -> int:
    """Trials a grid search will run (choice values count as grid axes)."""
    sizes = [len(candidate_values(d)) for d in spec.space.values() if isinstance(d, (Grid, Choice))]
    return math.prod(sizes) * spec.samples
