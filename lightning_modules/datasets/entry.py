"""What one dataset declares, once: its spec section, task, builder, shapes, limits and search.

Every fact that differs between datasets lives in its entry (`lightning_modules.datasets.<name>`)
and every consumer asks the entry: the spec's `data:` union and task rules, the builders, the
service's ceilings, the default search space and the network's per-step head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, get_args

from pydantic import Field

from lightning_modules.sections import CELL_TYPES, Section, TaskKind

Limit = tuple[str, int]
"""(the spec field to name in a refusal, its value): e.g. `("data.seq_len", 50)`."""

SEED_SPACE: Mapping[str, Any] = {
    "cell_type": {"choice": list(CELL_TYPES)},
    "num_layers": {"choice": [2, 3, 4]},
    "hidden_size": {"choice": [32, 64, 128]},
    "grad_clip": {"loguniform": [0.1, 10.0]},
}
"""The seed's empirical ranges (all cells, 2-4 layers, clip 0.1-10 on a log scale), written as a
job spec's `search_space`: the default of the built-in benchmarks."""


def _unknown(_cfg: Any) -> None:
    return None


class GeneratedSplits(Section):
    """The split sizes of a dataset the job generates itself (the synthetic tasks)."""

    n_train: int = Field(10000, gt=0)
    n_val: int = Field(1000, gt=0)
    n_test: int = Field(1000, gt=0)


def generated_examples(cfg: GeneratedSplits) -> Limit:
    """The service's ceiling on generated examples: all three splits, named by `n_train`."""
    return "data.n_train", cfg.n_train + cfg.n_val + cfg.n_test


@dataclass(frozen=True)
class Dataset:
    """A dataset the spec's `data.name` can select."""

    config: type[Section]
    """Its `data:` section; the section's `name` literal is the dataset's name."""
    task: TaskKind | None
    """The task it is for; None: the section's own `task` field decides (the user's data)."""
    builder: str
    """`module:function` building `SequenceData` from (section, seed); imported when first
    used, so the registry stays light (the job service reads it without torch)."""
    inputs: Callable[[Any], int]
    """Features per step the network reads (the user's data: 1, a lower bound until read)."""
    outputs: Callable[[Any], int]
    """Classes, regression targets, or the vocabulary's size (a bound) of a language model."""
    search_space: Mapping[str, Any] = field(default_factory=lambda: dict(SEED_SPACE))
    """The default search space, written as a job spec's `search_space`."""
    per_step: bool = False
    """A target at every step (the network's head reads every step), not one per sequence."""
    varying_length: bool = False
    """Sequences differ in length (a readout of a fixed number of steps is refused)."""
    generated: Callable[[Any], Limit | None] = _unknown
    """(field, examples) the job generates itself, for the service's ceiling."""
    steps: Callable[[Any], Limit | None] = _unknown
    """(field, steps per sequence) when the spec fixes it, for the service's ceiling."""
    datamodule: str = "lightning_modules.data.base:SequenceDataModule"
    """`module:class` serving the built splits as batches."""
    digest_ignores: frozenset[str] = frozenset({"limit"})
    """Options that do not change the data a model is tested on (left out of its digest)."""

    @property
    def name(self) -> str:
        return get_args(self.config.model_fields["name"].annotation)[0]

    def build(self, cfg: Section, seed: int):
        return _load(self.builder)(cfg, seed)

    def datamodule_class(self) -> type:
        return _load(self.datamodule)


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(import_module(module), name)
