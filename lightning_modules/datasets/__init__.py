"""The datasets a spec's `data.name` can select: one module each, listed here once.

Adding a dataset is one new module in this package, holding its `data:` section and its
`DATASET` entry (`lightning_modules.datasets.entry.Dataset`), plus its line in `MODULES`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Annotated, Any, Union

from pydantic import Field

from lightning_modules.datasets.entry import Dataset
from lightning_modules.sections import TaskKind

MODULES = (  # modules of this package, one per dataset, in the order the docs list them
    "mnist_rows",
    "mnist1d",
    "digits",
    "adding",
    "copy",
    "text",
    "sequences",
)

DATASETS: dict[str, Dataset] = {
    entry.name: entry for entry in (import_module(f"{__name__}.{m}").DATASET for m in MODULES)
}

DataConfig = Annotated[
    Union[tuple(entry.config for entry in DATASETS.values())],  # noqa: UP007 (built from the table)
    Field(discriminator="name"),
]
"""The spec's `data:` section: one dataset's section, chosen by its `name`."""


def dataset_of(data: Any) -> Dataset:
    """The entry of a `data:` section (or of a dataset's name)."""
    return DATASETS[data if isinstance(data, str) else data.name]


def task_of(data: Any) -> TaskKind:
    """The task a dataset is for: fixed per built-in dataset, chosen in the spec for user data."""
    return dataset_of(data).task or data.task
