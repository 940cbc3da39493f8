"""What every spec section shares: strict frozen sections and the names the sections use.

Kept apart from `config` so that the dataset modules (`lightning_modules.datasets`), which
`config` collects into the `data:` section, can build on it without a circular import.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

CellType = Literal["rnn_tanh", "rnn_relu", "lstm", "gru"]
CELL_TYPES: tuple[str, ...] = get_args(CellType)
TaskKind = Literal["classification", "regression", "language_model"]


class Section(BaseModel):
    """A spec section: unknown fields are refused by name, values never change after checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
