"""Typed configuration of one training run; the search spec reuses these field names.

Every section forbids unknown fields, so a typo fails with the field's name instead of being
silently ignored. Field names are unique across sections (`TrainSpec.with_params` routes a flat
dict of sampled hyperparameters, as Ray Tune produces, to the section that owns each name).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lightning_modules.datasets import DATASETS, DataConfig, dataset_of, task_of
from lightning_modules.sections import CELL_TYPES, CellType, Section, TaskKind

Optimizer = Literal[
    "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"
]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


# --------------------------------------------------------------------------------------- model
class ModelConfig(Section):
    cell_type: CellType = "lstm"
    num_layers: int = Field(1, ge=1, le=16)
    hidden_size: int = Field(128, ge=1, le=8192)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    """Between stacked layers (torch.nn semantics), never across time."""
    input_dropout: float = Field(0.0, ge=0, lt=1)
    """Locked (variational) dropout on the inputs: one mask per sequence."""
    output_dropout: float = Field(0.0, ge=0, lt=1)
    """Locked dropout on the top layer's outputs."""
    readout: Literal["last", "mean", "linear_all"] = "last"
    """Sequence-to-vector readout (ignored by per-step tasks: copy, text)."""
    patch: int = Field(1, ge=1, le=64)
    """Steps fed as one input: `patch` consecutive steps of F features become one step of
    patch x F (the last one zero-filled), so a recurrent cell runs 1/patch as many steps on
    long sequences. Part of the network: serving feeds raw steps as training did."""
    forget_bias: float = 1.0
    """Initial LSTM forget-gate bias (Jozefowicz et al. 2015; the seed's `forget_bias`)."""
    embedding_dim: int = Field(64, ge=1)
    """Character embedding width (language models only)."""

    @field_validator("cell_type", mode="before")
    @classmethod
    def _known_cell(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in CELL_TYPES:
            raise ValueError(f"unknown cell type {v!r}; choose one of {', '.join(CELL_TYPES)}")
        return v


class OptimConfig(Section):
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    """For `momentum`, `nesterov` and `rmsprop`."""
    lr_schedule: Literal["none", "cosine", "step", "plateau"] = "none"
    lr_step_epochs: int = Field(10, ge=1)
    lr_gamma: float = Field(0.5, gt=0, le=1)
    batch_size: int = Field(64, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    """Clipping threshold (norm, or value); for `auto` an upper cap (None: no cap)."""
    grad_clip_algorithm: Literal["norm", "value", "auto"] = "norm"
    """`auto` is AutoClip (Seetharaman et al. 2020): clip the norm at a percentile of its history."""
    autoclip_percentile: float = Field(10.0, gt=0, le=100)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _known_optimizer(cls, v: Any) -> Any:
        if v == "ftrl":
            raise ValueError(
                "ftrl is TensorFlow-only and has no PyTorch implementation; "
                f"choose one of {', '.join(OPTIMIZERS)}"
            )
        if isinstance(v, str) and v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; choose one of {', '.join(OPTIMIZERS)}")
        return v


class TrainerConfig(Section):
    max_epochs: int = Field(10, ge=1)
    max_time_s: float | None = Field(None, gt=0)
    """Wall-clock budget in seconds; training stops after the step that crosses it."""
    patience: int | None = Field(None, ge=1)
    """Early stopping: epochs without improvement of the monitored metric (None: off)."""
    divergence_factor: float | None = Field(5.0, gt=1)
    """Divergence: stop, as diverged, when an epoch's mean training loss exceeds this multiple
    of the first batch's loss (None: only a NaN/inf loss or gradient norm counts)."""
    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu"] = "cpu"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None: torch's default)."""
    diagnostics: bool = True
    """Per-timestep gradient norms ||dL/dh_t|| on a validation batch after training (PNG+JSON)."""


class TrainSpec(Section):
    """One training run: data, model, optimisation, trainer. `rnntune train SPEC.yaml`."""

    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _check_readout(self) -> TrainSpec:
        dataset = dataset_of(self.data)
        if self.model.patch > 1 and dataset.per_step:
            raise ValueError(
                "model.patch: feeds several steps as one to sequence-to-vector models; "
                f"{self.data.name} predicts every step"
            )
        if dataset.varying_length and self.model.readout == "linear_all":
            raise ValueError(
                "model.readout: linear_all reads a fixed number of steps; the sequences of "
                f"{self.data.name} vary in length: use last or mean"
            )
        return self

    @property
    def task(self) -> TaskKind:
        return task_of(self.data)

    def ignored_settings(self) -> list[str]:
        """Settings given a value that this run cannot use, one line each, by name: said once
        when a run or job starts (a search reports each for the trials it concerns)."""
        m, language_model = self.model, self.task == "language_model"
        notes = []
        if m.dropout > 0 and m.num_layers == 1:
            notes.append(
                f"model.dropout: {m.dropout} applies between stacked layers only; with "
                "num_layers 1 it does nothing (model.output_dropout applies to one layer)"
            )
        if m.bidirectional and language_model:
            notes.append(
                "model.bidirectional: a character language model reads one way (it predicts "
                "the next character); ignored"
            )
        return notes

    def applied_settings(self) -> dict[str, Any]:
        """The model and optimiser settings that take effect, flat: what a run's parameters show.

        Left out, because nothing reads them here: `embedding_dim` but for language models,
        `readout` for per-step tasks, `bidirectional` for language models (always one-way),
        `forget_bias` but for LSTMs, `dropout` on one layer (PyTorch applies it between
        layers), `momentum` but for momentum, nesterov and rmsprop, `lr_step_epochs` and
        `lr_gamma` without the schedule that reads them, the clipping algorithm without
        clipping, `autoclip_percentile` but for `auto`.
        """
        m, o = self.model, self.optim
        language_model = self.task == "language_model"
        per_step = dataset_of(self.data).per_step
        skip = {
            "embedding_dim": not language_model,
            "patch": per_step,
            "readout": per_step,
            "bidirectional": language_model,
            "forget_bias": m.cell_type != "lstm",
            "dropout": m.num_layers == 1,
            "momentum": o.optimizer not in ("momentum", "nesterov", "rmsprop"),
            "lr_step_epochs": o.lr_schedule != "step",
            "lr_gamma": o.lr_schedule not in ("step", "plateau"),
            "grad_clip_algorithm": o.grad_clip is None and o.grad_clip_algorithm != "auto",
            "autoclip_percentile": o.grad_clip_algorithm != "auto",
        }
        flat = {**m.model_dump(), **o.model_dump()}
        return {k: v for k, v in flat.items() if not skip.get(k, False)}

    def with_params(self, params: dict[str, Any]) -> TrainSpec:
        """A copy with flat hyperparameters (`{"cell_type": "gru", "lr": 0.01}`) set in place."""
        sections = {
            name: getattr(self, name).model_dump() for name in ("model", "optim", "trainer")
        }
        for key, value in params.items():
            owner = next((s for s, fields in sections.items() if key in fields), None)
            if owner is None:
                raise ValueError(f"{key}: not a model, optim or trainer field")
            sections[owner][key] = value
        return TrainSpec.model_validate({"data": self.data.model_dump(), **sections})


def validation_problems(
    err: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """(field, reason) per problem: `("model.hidden_size", "Input should be ... >= 1")`. Given
    the model validated, an unknown field is answered with the nearest valid one:
    `("model.hiden_size", "unknown field; did you mean hidden_size?")`."""
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
            if model is not None and e["loc"]:
                msg += did_you_mean(str(e["loc"][-1]), fields_at(model, e["loc"]))
        if named := re.match(r"^([\w.]+): (.*)$", msg, re.S):
            # A model-level check that names its field, relative to the model it checks.
            field_name, msg = named.groups()
            loc = f"{loc}.{field_name}" if loc and not field_name.startswith(loc) else field_name
        problems.append((loc, msg))
    return problems


def did_you_mean(name: str, options: list[str]) -> str:
    """`; did you mean hidden_size?` for the closest of `options`, or nothing."""
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if not close and len(name) >= 4:  # a field's start: `grace` for grace_period
        close = [o for o in options if o.startswith(name)][:1]
    return f"; did you mean {close[0]}?" if close else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (`X | None`, `A | B`, `list[X]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid where `loc`'s last part stands, e.g. ModelConfig's for
    `("model", "hiden_size")`; a dataset's own for `("data", "digits", "limitt")`."""
    models = [model]
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list
            continue
        if part in _UNION_TAGS:  # the dataset a discriminated union picked
            models = [m for m in models if part in get_args(_annotation(m, "name"))] or models
            continue
        models = [
            c for m in models if part in m.model_fields for c in _models_in(_annotation(m, part))
        ]
    return sorted({name for m in models for name in m.model_fields})


def _annotation(model: type[BaseModel], field_name: str) -> Any:
    info = model.model_fields.get(field_name)
    return info.annotation if info is not None else None


def format_validation_error(
    err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: `model.hidden_size: Input should be greater than or equal to 1`."""
    return "\n".join(
        f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}"
        for loc, msg in validation_problems(err, model)
    )


_UNION_TAGS = set(DATASETS)


class SpecError(ValueError):
    """A spec file that cannot be read or does not validate; the message names each field, and
    `source` the file (or document) when the message does not."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


def read_spec_file(path: str | Path) -> object:
    """The YAML (or JSON) document in a spec file; unreadable files become a SpecError."""
    from lightning_modules.documents import DocumentError, load_yaml

    path = Path(path)
    try:
        return load_yaml(path.read_text())
    except FileNotFoundError as e:
        raise SpecError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise SpecError(f"{path}: a folder, not a spec file") from e
    except DocumentError as e:
        raise SpecError(f"{path}: {e}") from e


def validate_spec(model: type[BaseModel], raw: object, source: str):
    """`model.model_validate(raw)` with field-named, one-line-per-problem errors."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"{source}: expected a mapping of sections ({', '.join(model.model_fields)})"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, model=model), source) from e


def load_train_spec(path: str | Path) -> TrainSpec:
    return validate_spec(TrainSpec, read_spec_file(path), str(path))
