"""Request bodies -> validated model inputs, for our `/predict` and MLflow's `/invocations` formats.

Everything a caller can get wrong raises `BadInput` with the field and the reason (the server
answers 400 with it); nothing here touches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


class BadInput(ValueError):
    """A request the model cannot take; the message names the field and the reason."""


@dataclass(frozen=True)
class Limits:
    input_size: int  # features per step
    max_steps: int  # longest sequence accepted
    max_sequences: int = 1024  # per request
    max_new_chars: int = 2000  # language models
    max_prompt_chars: int = 10_000
    # A model of the user's own sequences takes them padded: trailing all-NaN steps are padding
    # (dropped), and NaNs left inside are missing values, taken when it fills them itself
    # (`data.missing` mean or ffill). As its pyfunc does, so both servers answer alike.
    padded: bool = False
    fills_missing: bool = False


@dataclass
class Sequences:
    """Classifier/regressor input: one (T_i, F) float32 array per sequence; lengths may differ."""

    items: list[np.ndarray]


@dataclass
class Prompts:
    """Language-model input: prompts plus sampling parameters."""

    texts: list[str]
    params: dict[str, Any]


LM_PARAM_TYPES = {"max_new_chars": int, "temperature": float, "top_k": int, "seed": int}
LM_PARAMS = {"max_new_chars": 200, "temperature": 1.0, "top_k": 0, "seed": 0}  # the defaults


def sequences(raw: Any, limits: Limits, field: str = "sequences") -> Sequences:
    """A list of sequences, each a list of steps (each F numbers) or a flat list of T*F numbers."""
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"{field}: expected a non-empty list of sequences")
    if len(raw) > limits.max_sequences:
        raise BadInput(f"{field}: {len(raw)} sequences, at most {limits.max_sequences} per request")
    items = []
    for i, seq in enumerate(raw):
        items.append(_sequence(seq, limits, f"{field}[{i}]"))
    return Sequences(items)


def _sequence(seq: Any, limits: Limits, where: str) -> np.ndarray:
    f = limits.input_size
    try:
        x = np.asarray(seq, dtype=np.float32)
    except (TypeError, ValueError, RecursionError):
        raise BadInput(f"{where}: not a rectangular array of numbers") from None
    except OverflowError:
        raise BadInput(f"{where}: a number too large for float32") from None
    if x.ndim == 1 and f > 0 and x.size % f == 0 and x.size:
        x = x.reshape(-1, f)  # a flattened sequence of T*F numbers
    if x.ndim != 2 or x.shape[1] != f:
        raise BadInput(f"{where}: expected shape (T, {f}) or T*{f} numbers, got {x.shape}")
    if x.shape[0] == 0:
        raise BadInput(f"{where}: empty sequence")
    if x.shape[0] > limits.max_steps:
        raise BadInput(f"{where}: {x.shape[0]} steps, at most {limits.max_steps}")
    if limits.padded:
        return unpadded(x, limits.fills_missing, where)
    if not np.isfinite(x).all():
        raise BadInput(f"{where}: contains NaN or infinite values")
    return x


def unpadded(x: np.ndarray, fills_missing: bool, where: str) -> np.ndarray:
    """A (T, F) sequence of the user's data without its padding (trailing all-NaN steps); NaNs
    left are missing values, refused unless the model fills them; infinities always."""
    kept = ~np.isnan(x).all(axis=1)
    x = x[: len(kept) - int(np.argmax(kept[::-1]))] if kept.any() else x[:0]
    if len(x) == 0:
        raise BadInput(f"{where}: empty sequence (every step is NaN padding)")
    if np.isinf(x).any():
        raise BadInput(f"{where}: contains infinite values")
    if not fills_missing and np.isnan(x).any():
        raise BadInput(
            f"{where}: contains NaN (missing) values; this model refuses them (data.missing)"
        )
    return x


def prompts(raw: Any, params: Any, limits: Limits, field: str = "prompt") -> Prompts:
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadInput(f"{field}: expected a string or a non-empty list of strings")
    if len(texts) > limits.max_sequences:
        raise BadInput(f"{field}: {len(texts)} prompts, at most {limits.max_sequences}")
    for i, t in enumerate(texts):
        if len(t) > limits.max_prompt_chars:
            raise BadInput(f"{field}[{i}]: {len(t)} characters, at most {limits.max_prompt_chars}")
    return Prompts(texts, sampling_params(params, limits))


def sampling_params(params: Any, limits: Limits) -> dict[str, Any]:
    params = params or {}
    if not isinstance(params, dict):
        raise BadInput("params: expected an object")
    out: dict[str, Any] = dict(LM_PARAMS)
    for key, value in params.items():
        if key not in LM_PARAM_TYPES:
            raise BadInput(f"params.{key}: unknown field ({', '.join(LM_PARAM_TYPES)})")
        kind = LM_PARAM_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInput(f"params.{key}: expected a number")
        try:  # an integer of hundreds of digits has no float: as out of range as Infinity
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise BadInput(f"params.{key}: must be a finite number")
        if kind is int and float(value) != int(value):
            raise BadInput(f"params.{key}: expected an integer")
        out[key] = kind(value)
    if not 0 <= out["max_new_chars"] <= limits.max_new_chars:
        raise BadInput(f"params.max_new_chars: between 0 and {limits.max_new_chars}")
    if not 0 <= out["temperature"] <= 10:
        raise BadInput("params.temperature: between 0 (greedy) and 10")
    if out["top_k"] < 0:
        raise BadInput("params.top_k: 0 (all) or more")
    if not 0 <= out["seed"] < 2**63:
        raise BadInput("params.seed: between 0 and 2**63 - 1")
    return out


PREDICT_FIELDS = ("sequences", "prompt", *LM_PARAM_TYPES)


def predict(body: Any, language_model: bool, limits: Limits) -> Sequences | Prompts:
    """Our `/predict` body: `sequences`, or for language models `prompt` and sampling fields."""
    if not isinstance(body, dict):
        raise BadInput("body: expected a JSON object")
    unknown = sorted(set(body) - set(PREDICT_FIELDS))
    if unknown:
        raise BadInput(f"{unknown[0]}: unknown field ({', '.join(PREDICT_FIELDS)})")
    params = {k: body[k] for k in LM_PARAM_TYPES if body.get(k) is not None}
    if language_model:
        if body.get("prompt") is None or body.get("sequences") is not None:
            raise BadInput("prompt: a language model takes `prompt` (not `sequences`)")
        return prompts(body["prompt"], params, limits)
    if body.get("sequences") is None or body.get("prompt") is not None:
        raise BadInput("sequences: this model takes `sequences` (not `prompt`)")
    if params:
        raise BadInput(f"{next(iter(params))}: only language models take sampling parameters")
    return sequences(body["sequences"], limits)


MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")


def invocations(body: Any, language_model: bool, limits: Limits) -> Sequences | Prompts:
    """MLflow's scoring-server body formats: exactly one of MLFLOW_KEYS, optionally `params`."""
    if not isinstance(body, dict):
        raise BadInput(f"body: expected an object with one of {', '.join(MLFLOW_KEYS)}")
    unknown = set(body) - {*MLFLOW_KEYS, "params"}
    if unknown:
        raise BadInput(f"{sorted(unknown)[0]}: unknown field ({', '.join(MLFLOW_KEYS)}, params)")
    given = [k for k in MLFLOW_KEYS if k in body]
    if len(given) != 1:
        raise BadInput(f"body: expected exactly one of {', '.join(MLFLOW_KEYS)}")
    key = given[0]
    rows = _rows(key, body[key], "prompt" if language_model else None)
    if language_model:
        return prompts(rows, body.get("params"), limits, key)
    if body.get("params"):
        raise BadInput("params: this model takes no parameters")
    return sequences(rows, limits, key)


def _rows(key: str, value: Any, column: str | None) -> Any:
    """Each format's rows: sequences (or flattened sequences), or prompts for `column`."""
    if key in ("inputs", "instances"):
        if column and isinstance(value, dict):
            return value.get(column)
        return value
    if key == "dataframe_records":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            raise BadInput(f"{key}: expected a list of records (objects)")
        return [_record(r, column, key) for r in value]
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise BadInput(f"{key}: expected an object with `data` (and `columns`)")
    columns = value.get("columns")
    data = value["data"]
    if column:
        idx = columns.index(column) if isinstance(columns, list) and column in columns else 0
        return [row[idx] if isinstance(row, list) and len(row) > idx else None for row in data]
    # One column holding each row's flattened sequence, or one scalar column per value.
    return [row[0] if isinstance(row, list) and len(row) == 1 else row for row in data]


def _record(record: dict, column: str | None, key: str) -> Any:
    if column:
        return record.get(column)
    if len(record) == 1:
        return next(iter(record.values()))
    return list(record.values())
