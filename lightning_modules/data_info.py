"""What a trained network knows of its data: typed and versioned, from training through the
checkpoint to the serving bundle.

A checkpoint or bundle stores `DataInfo.model_dump(mode="json")` (plain data: `torch.load`
with `weights_only=True` reads it). Version 1 is the untyped dict rnntune wrote before this
model existed (`extras` holding the vocabulary or the preprocessing); its layout is known, so
it is read and converted. Any other version, or a malformed one, is refused by `load` with a
message naming what was read, never a KeyError deep in a model's constructor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lightning_modules.preprocessing import Preprocessing

DATA_INFO_VERSION = 2


class ImageScaling(BaseModel):
    """Built-in image datasets (MNIST rows, digits): pixels were divided by 1/scale."""

    model_config = ConfigDict(extra="forbid")
    scale: float
    permuted: bool = False  # permuted MNIST: the fixed pixel order of data/pixels.py


class DataInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = DATA_INFO_VERSION
    input_size: int = Field(ge=1)  # features per step (text: the vocabulary size)
    out_features: int = Field(ge=1)  # classes, regression targets, or the vocabulary size
    seq_len: int = Field(ge=1)  # the longest training sequence (fixed-length data: its length)
    vocabulary: list[str] | None = None  # text: index -> character; index 0 is "unknown"
    image: ImageScaling | None = None
    preprocessing: Preprocessing | None = None  # user data: fitted on the training split
    ensemble: int = Field(1, ge=1)  # networks averaged: the k fold models of cross-validation

    @classmethod
    def from_data(
        cls,
        input_size: int,
        out_features: int,
        seq_len: int,
        extras: Mapping[str, Any],
        ensemble: int = 1,
    ) -> DataInfo:
        """From a dataset's dimensions and its `extras` (lightning_modules.data.base)."""
        prep = dict(extras.get("preprocessing") or {})
        kind = prep.pop("kind", None)
        return cls(
            input_size=input_size,
            out_features=out_features,
            seq_len=seq_len,
            vocabulary=extras.get("vocabulary"),
            image=ImageScaling(**prep) if prep and kind is None else None,
            preprocessing=Preprocessing.from_dict(prep) if kind == "sequences" else None,
            ensemble=ensemble,
        )

    @classmethod
    def load(cls, raw: Any, where: str) -> DataInfo:
        """A stored description; `where` names the checkpoint or bundle for the message."""
        if isinstance(raw, DataInfo):
            return raw
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: no data description (got {type(raw).__name__})")
        version = raw.get("version", 1)
        try:
            if version == 1 and "extras" in raw:
                return cls.from_data(
                    raw["input_size"], raw["out_features"], raw["seq_len"], raw["extras"]
                )
            if version == DATA_INFO_VERSION:
                return cls.model_validate(dict(raw))
        except (KeyError, TypeError, ValidationError) as e:
            problem = (
                "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()[:3])
                if isinstance(e, ValidationError)
                else f"missing {e}"
                if isinstance(e, KeyError)
                else str(e)
            )
            raise ValueError(f"{where}: its data description is malformed: {problem}") from None
        raise ValueError(
            f"{where}: data description version {version!r}; this rnntune reads versions 1 and "
            f"{DATA_INFO_VERSION}. It was written by another rnntune release: load it with that "
            "release, or retrain"
        )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
