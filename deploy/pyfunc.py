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

from lightning_modules.config import TrainSpec
from lightning_modules.data.mnist import PERMUTATION_SEED
from lightning_modules.data.text import Vocabulary
from lightning_modules.language_model import generate
from lightning_modules.models import build_network

MODEL_FILE = "model.pt"
LM_PARAMS = {"max_new_chars": 200, "temperature": 1.0, "top_k": 0, "seed": 0}


def save_bundle(net: torch.nn.Module, spec: TrainSpec, data_info: dict, path: Path) -> Path:
    """Weights and everything needed to rebuild and feed the network, in one torch file."""
    torch.save(
        {
            "state_dict": net.state_dict(),
            "spec": spec.model_dump(mode="json"),
            "data_info": data_info,
        },
        path,
    )
    return path


def load_bundle(path: str | Path) -> tuple[torch.nn.Module, TrainSpec, dict]:
    raw = torch.load(path, map_location="cpu", weights_only=False)
    spec = TrainSpec.model_validate(raw["spec"])
    net = build_network(spec.model, spec.task, raw["data_info"], per_step=spec.data.name == "copy")
    net.load_state_dict(raw["state_dict"])
    return net.eval(), spec, raw["data_info"]


class RecurrentModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        torch.set_num_threads(1)  # serving: one request stream per worker; scale out, not up
        self.attach(*load_bundle(context.artifacts["model"]))

    def attach(self, net: torch.nn.Module, spec: TrainSpec, data_info: dict) -> RecurrentModel:
        """Serve an in-memory network (what `load_context` does with the logged bundle)."""
        self.net, self.spec, self.data_info = net.eval(), spec, data_info
        self.task = spec.task
        if self.task == "language_model":
            self.vocab = Vocabulary(data_info["extras"]["vocabulary"][1:])
        prep = data_info.get("extras", {}).get("preprocessing", {})
        self.permutation = (
            np.random.default_rng(PERMUTATION_SEED).permutation(784)
            if prep.get("permuted")
            else None
        )
        return self

    def _sequences(self, model_input: Any) -> torch.Tensor:
        x = np.asarray(
            model_input.values if isinstance(model_input, pd.DataFrame) else model_input,
            dtype=np.float32,
        )
        t, f = self.data_info["seq_len"], self.data_info["input_size"]
        if x.ndim == 2 and x.shape[1] == t * f:
            x = x.reshape(-1, t, f)
        if x.ndim != 3 or x.shape[2] != f:
            raise ValueError(
                f"inputs: expected shape (N, T, {f}) (T={t} for this model), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise ValueError("inputs: contain NaN or infinite values")
        if self.permutation is not None:
            x = x.reshape(len(x), -1)[:, self.permutation].reshape(-1, t, f)
        return torch.from_numpy(np.ascontiguousarray(x))

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.task == "language_model":
            return self._generate(model_input, {**LM_PARAMS, **(params or {})})
        with torch.no_grad():
            out = self.net(self._sequences(model_input))
        if self.task == "regression":
            return pd.DataFrame(
                out.numpy(), columns=[f"value_{i}" for i in range(out.shape[1])]
            ).rename(columns={"value_0": "value"})
        probs = out.softmax(-1).numpy()
        if probs.ndim == 3:  # per-step classification (copy task)
            return pd.DataFrame({"labels": list(probs.argmax(-1))})
        frame = pd.DataFrame(probs, columns=[f"prob_{i}" for i in range(probs.shape[1])])
        frame.insert(0, "label", probs.argmax(-1))
        return frame

    def _generate(self, model_input, params: dict[str, Any]) -> pd.DataFrame:
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
