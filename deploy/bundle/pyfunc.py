"""The MLflow pyfunc wrapper of a trained recurrent model: plain weights + config, no Lightning.

`predict` takes what the task takes: sequences (N, T, F) for classifiers (-> label and class
probabilities) and regressors (-> values), a `prompt` column for language models (-> generated
text; params `max_new_chars`, `temperature`, `top_k`, `seed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from deploy.bundle.inputs import LM_PARAMS, unpadded
from lightning_modules.config import TrainSpec
from lightning_modules.data.pixels import pixel_order
from lightning_modules.data_info import DataInfo
from lightning_modules.datasets import dataset_of
from lightning_modules.models import build_network
from lightning_modules.sampling import Vocabulary, generate

MODEL_FILE = "model.pt"


def output_columns(task: str, width: int) -> list[str]:
    """The pyfunc table's columns for `width` outputs: `value` (+ `value_i`) for regressors,
    `label` + `prob_i` for classifiers."""
    if task == "regression":
        return ["value", *(f"value_{i}" for i in range(1, width))]
    return ["label", *(f"prob_{i}" for i in range(width))]


def output_records(task: str, out: np.ndarray, classes: list | None = None) -> list[dict[str, Any]]:
    """`frame(out)` as MLflow's scoring server writes it (records), without building a frame."""
    if out.ndim == 3:
        return [{"labels": row} for row in out.argmax(-1).tolist()]
    columns = output_columns(task, out.shape[1])
    rows = out.tolist()
    if task == "regression":
        return [dict(zip(columns, row, strict=True)) for row in rows]
    labels = label_names(out.argmax(-1), classes)
    return [dict(zip(columns, [y, *row], strict=True)) for y, row in zip(labels, rows, strict=True)]


def label_names(idx: np.ndarray, classes: list | None) -> list:
    """Class indices -> the user's labels (indices themselves for built-in datasets)."""
    return [classes[int(i)] for i in idx] if classes else [int(i) for i in idx]


def save_bundle(net: torch.nn.Module, spec: TrainSpec, data_info: DataInfo, path: Path) -> Path:
    """Weights and everything needed to rebuild and feed the network, in one torch file."""
    torch.save(
        {
            "state_dict": net.state_dict(),
            "spec": spec.model_dump(mode="json"),
            "data_info": data_info.dump(),
        },
        path,
    )
    return path


def load_bundle(path: str | Path) -> tuple[torch.nn.Module, TrainSpec, DataInfo]:
    raw = torch.load(path, map_location="cpu", weights_only=True)  # tensors + plain data only
    spec = TrainSpec.model_validate(raw["spec"])
    info = DataInfo.load(raw.get("data_info"), f"model bundle {path}")
    net = build_network(spec.model, spec.task, info, per_step=dataset_of(spec.data).per_step)
    net.load_state_dict(raw["state_dict"])
    return net.eval(), spec, info


class RecurrentModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        torch.set_num_threads(1)  # serving: one request stream per worker; scale out, not up
        self.attach(*load_bundle(context.artifacts["model"]))

    def attach(self, net: torch.nn.Module, spec: TrainSpec, data_info: DataInfo) -> RecurrentModel:
        """Serve an in-memory network (what `load_context` does with the logged bundle)."""
        self.net, self.spec, self.data_info = net.eval(), spec, data_info
        self.task = spec.task
        if self.task == "language_model":
            self.vocab = Vocabulary(data_info.vocabulary[1:])
        # User data: the training split's statistics, classes and target scaling.
        self.prep = data_info.preprocessing
        self.classes = self.prep.classes if self.prep else None
        image = data_info.image
        self.permutation = pixel_order() if image and image.permuted else None
        return self

    def _sequences(self, model_input: Any) -> list[np.ndarray]:
        if self.prep is not None:
            return self._raw_sequences(model_input)
        x = np.asarray(
            model_input.values if isinstance(model_input, pd.DataFrame) else model_input,
            dtype=np.float32,
        )
        t, f = self.data_info.seq_len, self.data_info.input_size
        if x.ndim == 2 and x.shape[1] == t * f:
            x = x.reshape(-1, t, f)
        if x.ndim != 3 or x.shape[2] != f:
            raise ValueError(
                f"inputs: expected shape (N, T, {f}) (T={t} for this model), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("inputs: contain NaN or infinite values")
        return list(x)

    def _raw_sequences(self, model_input: Any) -> list[np.ndarray]:
        """User data: (N, T, F) with trailing all-NaN steps as padding, rows of flattened (or
        nested) sequences in a one-column frame, or a list of (T_i, F) arrays."""
        f = self.prep.input_size
        if isinstance(model_input, pd.DataFrame) and not pd.api.types.is_numeric_dtype(
            model_input.dtypes.iloc[0]
        ):
            model_input = list(model_input.iloc[:, 0])
        if isinstance(model_input, list):
            seqs = [np.asarray(s, dtype=np.float32).reshape(-1, f) for s in model_input]
        else:
            x = np.asarray(model_input, dtype=np.float32)
            if x.ndim != 3 or x.shape[2] != f:
                raise ValueError(f"inputs: expected shape (N, T, {f}), got {x.shape}")
            seqs = list(x)
        fills = self.prep.missing != "refuse"
        return [unpadded(s, fills, f"inputs[{i}]") for i, s in enumerate(seqs)]

    def labels(self, out: np.ndarray) -> list:
        """`score`'s class probabilities -> the predicted labels in the user's own names."""
        return label_names(out.argmax(-1), self.classes)

    def score(self, sequences: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, C) [per step: (N, T, C)] or regression values (N, K).

        Sequences may differ in length: they are padded and packed, so padding never changes a
        result. One forward pass for the whole list (what the server's request batching feeds).
        """
        if self.permutation is not None:
            sequences = [self._permuted(x) for x in sequences]
        if self.prep is not None:
            sequences = [self.prep.apply(x) for x in sequences]
        lengths = [len(x) for x in sequences]
        t_max = max(lengths)
        batch = np.zeros((len(sequences), t_max, sequences[0].shape[1]), dtype=np.float32)
        for i, x in enumerate(sequences):
            batch[i, : len(x)] = x  # (N, T_max, F), zero-padded
        ragged = min(lengths) != t_max
        with torch.no_grad():
            out = self.net(torch.from_numpy(batch), torch.tensor(lengths) if ragged else None)
        if self.task == "regression":
            return self.prep.unscale_targets(out.numpy()) if self.prep else out.numpy()
        return out.softmax(-1).numpy()

    def _permuted(self, x: np.ndarray) -> np.ndarray:
        if x.size != len(self.permutation):
            raise ValueError(f"inputs: a permuted-pixel model takes full {x.shape[1]}x28 images")
        return x.reshape(-1)[self.permutation].reshape(x.shape)

    # `model_input: pd.DataFrame` is what MLflow's scoring server passes; arrays and lists of
    # sequences work too (`_sequences`). The hint is one MLflow infers no schema from: the
    # signature is logged explicitly (tune/registry.py), and without a hint MLflow warns.
    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.task == "language_model":
            return self.generate_text(model_input, {**LM_PARAMS, **(params or {})})
        return self.frame(self.score(self._sequences(model_input)))

    def frame(self, out: np.ndarray) -> pd.DataFrame:
        """`score`'s output as the pyfunc's table: label + prob_i, or value (+ value_i)."""
        if out.ndim == 3:  # per-step classification (copy task)
            return pd.DataFrame({"labels": list(out.argmax(-1))})
        columns = output_columns(self.task, out.shape[1])
        if self.task == "regression":
            return pd.DataFrame(out, columns=columns)
        frame = pd.DataFrame(out, columns=columns[1:])
        frame.insert(0, "label", self.labels(out))
        return frame

    def generate_text(self, model_input, params: dict[str, Any]) -> pd.DataFrame:
        """A `text` column: each prompt continued (params as in LM_PARAMS)."""
        if isinstance(model_input, pd.DataFrame):
            prompts = (
                model_input["prompt"].astype(str).tolist()
                if "prompt" in model_input
                else model_input.iloc[:, 0].astype(str).tolist()
            )
        else:
            prompts = [str(p) for p in np.atleast_1d(model_input)]
        gen = torch.Generator().manual_seed(int(params["seed"]))
        top_k = int(params["top_k"]) or None
        texts = [
            generate(
                self.net,
                self.vocab,
                p,
                int(params["max_new_chars"]),
                float(params["temperature"]),
                top_k,
                gen,
            )
            for p in prompts
        ]
        return pd.DataFrame({"text": texts})
