"""The job spec: one validated description of a search, read by the CLI, the service and the cluster.

A job spec is a training spec (`data`, `model`, `optim`, `trainer`: the fixed settings) plus a
`search_space` whose keys are model/optim/trainer field names, each a fixed value or a
distribution, and the search, scheduler, budget, resources, storage, tracking and registry.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from lightning_modules.config import (
    ModelConfig,
    OptimConfig,
    TrainerConfig,
    TrainSpec,
    did_you_mean,
    format_validation_error,
    read_spec_file,
    validate_spec,
)
from lightning_modules.datasets import DATASETS, DataConfig
from lightning_modules.metrics import DEFAULT_MONITOR, better_mode
from lightning_modules.sections import Section
from tune.space import (
    Choice,
    Distribution,
    Grid,
    LogUniform,
    RandInt,
    SearchValue,
    Uniform,
    candidate_values,
    default_search_space,
    describe_range,
)

SEARCHABLE = set(ModelConfig.model_fields) | set(OptimConfig.model_fields) | {"seed", "patience"}
PBT_MUTABLE = ("lr", "grad_clip", "dropout")
# What PBT explores a mutable key over when the search space gives it no range
PBT_DEFAULT_RANGES: dict[str, Distribution] = {
    "lr": LogUniform(loguniform=(1e-4, 1e-1)),
    "grad_clip": LogUniform(loguniform=(0.1, 10.0)),
    "dropout": Uniform(uniform=(0.0, 0.5)),
}


class SearchConfig(Section):
    algorithm: Literal["random", "grid", "optuna"] = "random"
    """`grid` tries every combination of `grid`/`choice` values (x num_samples); `optuna` is TPE."""
    num_samples: int | None = Field(None, ge=1, le=10_000)
    """Trials to sample (times the `grid:` axes); unset: until `budget.time_budget_s` is spent,
    or 8 without a time budget (one pass for grid search)."""
    max_concurrent: int | None = Field(None, ge=1)
    seed: int | None = 0


class SchedulerConfig(Section):
    name: Literal["fifo", "asha", "hyperband", "median", "pbt"] = "asha"
    grace_period: int = Field(1, ge=1)
    """asha/median: epochs a trial always gets before it can be stopped."""
    reduction_factor: float = Field(3.0, gt=1)
    """asha/hyperband: keep 1/reduction_factor of trials at each rung."""
    perturbation_interval: int = Field(2, ge=1)
    """pbt: epochs between exploit/explore steps."""
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    """pbt: bottom fraction that copies the top fraction."""
    synch: bool = False
    """pbt: perturb the whole population at once, waiting for stragglers (seen to stall Tune
    2.60 with function trainables in small populations; off by default)."""


class BudgetConfig(Section):
    max_epochs: int | None = Field(None, ge=1)
    """Epochs per trial (the top of the schedulers' range); default: trainer.max_epochs."""
    time_budget_s: float | None = Field(None, gt=0)
    """The whole job's wall-clock budget, from its start to its exit: the search samples trials
    until what is left is what testing and registering the final model take."""


class ResourcesConfig(Section):
    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)
    """Per trial; fractions share a GPU between trials."""
    workers: int = Field(1, ge=1, le=256)
    """Data-parallel (DDP) workers per trial, each with `cpus` and `gpus`: above 1 a trial is a
    Ray Train run whose workers each train on a shard of the data (batch_size is per worker).
    Without search.max_concurrent, as many trials run at once as the cluster fits whole."""
    driver_cpus: float = Field(0.0, ge=0)
    driver_gpus: float = Field(0.0, ge=0)
    """Reserved for the job's driver (`python -m tune run`) when the service submits it to Ray."""


DEFAULT_STORAGE = "runs/tune"  # a job's storage; the embedded MLflow store lives there too


def embedded_tracking_uri(root: str | Path = DEFAULT_STORAGE) -> str:
    """The embedded SQLite MLflow store of jobs whose storage is the local folder `root`."""
    return f"sqlite:///{(Path(root) / 'mlflow.db').resolve()}"


class StorageConfig(Section):
    url: str = DEFAULT_STORAGE
    """Checkpoints and Tune state: a local folder or any fsspec URL (s3://, gs://, ...)."""
    keep_checkpoints: int = Field(2, ge=1)
    """Best K checkpoints kept per trial (by the job's metric)."""
    max_failures: int = Field(1, ge=0)
    """Retries of a trial that crashed (from its last checkpoint)."""


class TrackingConfig(Section):
    uri: str | None = None
    """MLflow tracking URI; default: an embedded SQLite file next to local storage."""
    experiment: str | None = None
    """MLflow experiment; default: the job name."""


class RegistryConfig(Section):
    model_name: str | None = None
    """Registered model name; default: the job name."""
    enabled: bool = True
    """Register the best model (set false for exploratory searches)."""
    final_model: Literal["ensemble", "refit"] = "ensemble"
    """After a cross-validated search: `ensemble` registers the winning trial's k fold models
    (probabilities averaged); `refit` trains its settings once more on every training
    sequence, for the epoch count the folds chose, within the job's budget."""


class JobSpec(Section):
    """One search job. `rnntune schema` prints its JSON schema."""

    name: str = Field("rnntune", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig(diagnostics=False)
    search_space: dict[str, SearchValue] | None = None
    """Field name -> fixed value or distribution; omitted: the dataset's default space, less
    every field the spec's `model` and `optim` sections set (a fixed value stays fixed)."""
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    metric: str | None = None
    """Default per task: val_acc (classification), val_loss (regression), val_bpc (text)."""
    mode: Literal["min", "max"] | None = None
    budget: BudgetConfig = BudgetConfig()
    resources: ResourcesConfig = ResourcesConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_space(cls, raw: Any) -> Any:
        """No `search_space`: the dataset's default one, written into the spec (so it travels
        with it), without the fields the spec fixes in `model` and `optim`."""
        if not isinstance(raw, dict) or raw.get("search_space") is not None:
            return raw
        data = raw.get("data")
        name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
        if not isinstance(name, str) or name not in DATASETS:
            return raw  # the data section's own error says what is wrong
        fixed = {k for section in ("model", "optim") for k in _fields_set(raw.get(section))}
        space = {k: v for k, v in default_search_space(name).items() if k not in fixed}
        return {**raw, "search_space": space}

    @property
    def default_space(self) -> bool:
        """Whether the job searches its dataset's default space (the spec wrote none), which
        the job may extend from its data (`tune.protocol.adapt`); a space the user wrote is
        searched as written."""
        fixed = self.model.model_fields_set | self.optim.model_fields_set
        default = {k: v for k, v in default_search_space(self.data.name).items() if k not in fixed}
        return self.space == default

    @property
    def samples(self) -> int:
        """Trials to sample: -1 for as many as the time budget allows."""
        if self.search.num_samples is not None:
            return self.search.num_samples
        if self.search.algorithm == "grid":
            return 1
        return -1 if self.budget.time_budget_s else DEFAULT_SAMPLES

    @property
    def task(self) -> str:
        return self.base_train_spec().task

    @property
    def monitor(self) -> tuple[str, str]:
        metric = self.metric or DEFAULT_MONITOR[self.task][0]
        return metric, self.mode or better_mode(metric)

    @property
    def space(self) -> dict[str, SearchValue]:
        if self.search_space is not None:
            return self.search_space
        return default_search_space(self.data.name)

    @property
    def max_epochs(self) -> int:
        return self.budget.max_epochs or self.trainer.max_epochs

    def ignored_settings(self) -> list[str]:
        """Settings of this job that some or all of its trials cannot use, by name, said once
        when the job starts (`TrainSpec.ignored_settings` for the fixed settings)."""
        base = self.base_train_spec()
        notes = [n for n in base.ignored_settings() if not n.startswith("model.dropout")]
        layers = self.space.get("num_layers", base.model.num_layers)
        one_layer = 1 in (
            candidate_values(layers) if isinstance(layers, Distribution) else [layers]
        )
        dropout = self.space.get("dropout", base.model.dropout)
        if one_layer and (isinstance(dropout, Distribution) or dropout):
            notes.append(
                "model.dropout: applies between stacked layers only; trials with num_layers 1 "
                "run without it (model.output_dropout applies to one layer)"
            )
        if self.scheduler.name == "pbt":
            for key, (dist, default) in self.pbt_explored().items():
                if default:
                    section = "model" if key in ModelConfig.model_fields else "optim"
                    notes.append(
                        f"{section}.{key}: PBT explores it over {describe_range(dist)}, a default "
                        f"range (search_space.{key}: a range to change it, a value to keep it fixed)"
                    )
        if self.trainer.threads is not None:
            notes.append(
                f"trainer.threads: {self.trainer.threads} is replaced in a search by "
                f"resources.cpus ({self.resources.cpus:g}) torch threads per trial"
            )
        return notes

    def pbt_explored(self) -> dict[str, tuple[Distribution, bool]]:
        """What PBT mutates, each with whether its range is a default: lr, clip threshold and
        dropout over the search space's ranges (a grid's values as choices). One the space
        leaves out is explored over `PBT_DEFAULT_RANGES` if it applies: clipping only when the
        spec clips (PBT does not turn it on), dropout only with stacked layers. One the space
        fixes to a value stays fixed."""
        space, base = self.space, self.base_train_spec()
        layers = space.get("num_layers", base.model.num_layers)
        stacked = max(int(v) for v in candidate_values(layers)) > 1
        explored: dict[str, tuple[Distribution, bool]] = {}
        for key in PBT_MUTABLE:
            dist = space.get(key)
            if isinstance(dist, Grid):
                explored[key] = (Choice(choice=dist.grid), False)
            elif isinstance(dist, Distribution):
                explored[key] = (dist, False)
            elif key in space:
                continue
            elif key == "grad_clip" and base.optim.grad_clip is None:
                continue
            elif key == "dropout" and not stacked:
                continue
            else:
                explored[key] = (PBT_DEFAULT_RANGES[key], True)
        return explored

    def base_train_spec(self) -> TrainSpec:
        trainer = self.trainer.model_copy(update={"max_epochs": self.max_epochs})
        return TrainSpec(data=self.data, model=self.model, optim=self.optim, trainer=trainer)

    def trial_spec(self, params: dict[str, Any]) -> TrainSpec:
        """The TrainSpec of one trial: fixed settings with its sampled values set in place."""
        return self.base_train_spec().with_params(params)

    @model_validator(mode="after")
    def _check_search(self) -> JobSpec:
        try:
            self.base_train_spec()  # the fixed settings on their own, before any search value
        except ValidationError as e:
            raise ValueError(format_validation_error(e)) from None
        space = self.space
        for key, dist in space.items():
            if key not in SEARCHABLE:
                hint = did_you_mean(key, sorted(SEARCHABLE))
                raise ValueError(
                    f"search_space.{key}: not a searchable field{hint or ''}"
                    + ("" if hint else f" ({', '.join(sorted(SEARCHABLE))})")
                )
            if isinstance(dist, (Uniform, LogUniform, RandInt)):
                lo, hi = candidate_values(dist)
                if lo > hi:
                    raise ValueError(f"search_space.{key}: low {lo} is above high {hi}")
                if isinstance(dist, LogUniform) and lo <= 0:
                    raise ValueError(f"search_space.{key}: loguniform needs low > 0")
            for value in candidate_values(dist):
                try:
                    self.base_train_spec().with_params({key: value})
                except ValidationError as e:
                    reason = format_validation_error(e).split(": ", 1)[-1]
                    raise ValueError(
                        f"search_space.{key}: value {value!r} is invalid: {reason}"
                    ) from None
        continuous = [k for k, d in space.items() if isinstance(d, (Uniform, LogUniform, RandInt))]
        if self.search.algorithm == "grid" and continuous:
            raise ValueError(
                f"search.algorithm: grid needs grid/choice values, not ranges for {continuous}"
            )
        grids = [k for k, d in space.items() if isinstance(d, Grid)]
        if self.search.algorithm == "optuna" and grids:
            raise ValueError(
                f"search.algorithm: optuna cannot take grid values ({grids}); use choice"
            )
        if self.scheduler.name == "pbt" and self.search.algorithm == "optuna":
            raise ValueError(
                "scheduler.name: pbt mutates hyperparameters itself; use random search"
            )
        if self.scheduler.name == "pbt" and not self.pbt_explored():
            raise ValueError(
                "scheduler.name: pbt explores lr, grad_clip or dropout, and this spec fixes lr, "
                "does not clip and has one layer; give search_space.lr (or another) a range"
            )
        metric, _ = DEFAULT_MONITOR[self.base_train_spec().task]
        allowed = {metric, "val_loss", "train_loss"}
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(f"metric: {self.metric!r} is not reported for this task; use {metric}")
        return self


DEFAULT_SAMPLES = 8  # trials of a search with neither num_samples nor a time budget


def _fields_set(section: Any) -> set[str]:
    """The fields a spec section gives (a mapping, or an already validated model)."""
    if isinstance(section, dict):
        return set(section)
    return set(getattr(section, "model_fields_set", ()))


# The sections only a job spec has (a train spec is a job spec without them).
JOB_ONLY_SECTIONS = frozenset(JobSpec.model_fields) - frozenset(TrainSpec.model_fields)


def parse_job_spec(raw: Any, source: str = "spec") -> JobSpec:
    return validate_spec(JobSpec, raw, source)


def load_job_spec(path: str | Path) -> JobSpec:
    return parse_job_spec(read_spec_file(path), str(path))


DATA_PATHS = ("url", "val_url", "test_url")


def absolute_data_paths(data: dict) -> dict[str, str]:
    """The local relative paths among a data section's files (`url`, `val_url`, `test_url`),
    made absolute from the current directory; URLs and absolute paths are left out."""
    return {
        key: str(Path(value).resolve())
        for key in DATA_PATHS
        if isinstance(value := data.get(key), str)
        and value
        and "://" not in value
        and not Path(value).is_absolute()
    }


def with_absolute_data_paths(spec: JobSpec) -> JobSpec:
    """Local data paths made absolute: every Ray trial runs in its own working directory."""
    updates = absolute_data_paths({k: getattr(spec.data, k, None) for k in DATA_PATHS})
    if not updates:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update=updates)})


def new_job_id(spec: JobSpec) -> str:
    """`<name>-<UTC date-time>-<4 hex>`: sortable, readable, and safe in paths and URLs."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{spec.name}-{stamp}-{secrets.token_hex(2)}"
