"""Networks built on the recurrent encoder: sequence-to-vector readouts and a character model.

Plain `nn.Module`s (no Lightning, Tune or MLflow) so `deploy/` can serve them as they are.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_modules.config import ModelConfig
from lightning_modules.data_info import DataInfo
from lightning_modules.encoder import RecurrentEncoder

READOUTS = ("last", "mean", "linear_all", "per_step")


def patch_steps(
    x: torch.Tensor, lengths: torch.Tensor | None, patch: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, F) -> (B, ceil(T/patch), patch*F): `patch` consecutive steps as one; a sequence
    of length L becomes ceil(L/patch) steps, its last one zero-filled past L."""
    batch, steps, features = x.shape
    pad = -steps % patch
    if pad:
        x = torch.cat([x, x.new_zeros(batch, pad, features)], dim=1)
    if lengths is not None:  # steps past each length are zero already (padded batches)
        lengths = torch.div(lengths + patch - 1, patch, rounding_mode="floor")
    return x.reshape(batch, (steps + pad) // patch, patch * features), lengths


class SequenceModel(nn.Module):
    """Encoder + readout + linear head: (B, T, F) -> (B, out_features), or (B, T, out) per step.

    Readouts: `last` = final state of every direction (the backward one after reading the whole
    sequence), `mean` = mean of outputs over valid steps, `linear_all` = one linear layer over
    all T outputs (the MNIST-1D paper's GRU; needs a fixed `seq_len`), `per_step` = the head on
    every step (copy task).
    """

    def __init__(
        self,
        input_size: int,
        out_features: int,
        readout: str = "last",
        seq_len: int | None = None,
        patch: int = 1,
        **encoder_kwargs,
    ) -> None:
        super().__init__()
        self.patch = patch
        if patch > 1:
            input_size, seq_len = input_size * patch, -(-seq_len // patch) if seq_len else None
        if readout not in READOUTS:
            raise ValueError(f"readout: unknown readout {readout!r}; choose one of {READOUTS}")
        if readout == "linear_all" and not seq_len:
            raise ValueError("readout: 'linear_all' needs a fixed sequence length")
        self.readout = readout
        self.encoder = RecurrentEncoder(input_size, **encoder_kwargs)
        width = self.encoder.output_size * (seq_len if readout == "linear_all" else 1)
        self.head = nn.Linear(width, out_features)

    def features(self, out: torch.Tensor, final: torch.Tensor, lengths: torch.Tensor | None):
        """Readout from per-step outputs (B, T, D*H) and final states (B, D*H)."""
        if self.readout == "last":
            return final
        if self.readout == "mean":
            if lengths is None:
                return out.mean(dim=1)
            # Outputs past each length are zero (packed), so a sum over T is a sum over valid steps.
            return out.sum(dim=1) / lengths.to(out.dtype).unsqueeze(1)
        if self.readout == "linear_all":
            return out.flatten(1)
        return out  # per_step

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.patch > 1:
            x, lengths = patch_steps(x, lengths, self.patch)  # (B, T/p, p*F)
        out, final, _ = self.encoder(x, lengths)
        return self.head(self.features(out, final, lengths))


class CharRNN(nn.Module):
    """Character language model: embedding -> unidirectional encoder -> per-step logits."""

    def __init__(self, vocab_size: int, embedding_dim: int = 64, **encoder_kwargs) -> None:
        super().__init__()
        encoder_kwargs["bidirectional"] = False  # a language model may not read the future
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.encoder = RecurrentEncoder(embedding_dim, **encoder_kwargs)
        self.head = nn.Linear(self.encoder.output_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens (B, T) -> logits (B, T, V) and the recurrent state to carry forward."""
        out, _, state = self.encoder(self.embedding(tokens), None, state)
        return self.head(out), state


class FoldEnsemble(nn.Module):
    """The k models of a cross-validated trial as one network: each trained without one fold
    of the training data; together they average class probabilities (the output is the log of
    the mean probability, so softmax and cross-entropy read it as logits) or regression values.
    """

    def __init__(self, members: list[nn.Module], classification: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.classification = classification

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outs = torch.stack([m(x, lengths) for m in self.members])  # (K, B, out)
        if self.classification:
            return torch.logsumexp(outs.log_softmax(-1), dim=0) - math.log(len(self.members))
        return outs.mean(dim=0)


def encoder_kwargs(cfg: ModelConfig) -> dict:
    """The RecurrentEncoder arguments a ModelConfig fixes."""
    return {
        "cell_type": cfg.cell_type,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "bidirectional": cfg.bidirectional,
        "dropout": cfg.dropout,
        "input_dropout": cfg.input_dropout,
        "output_dropout": cfg.output_dropout,
        "forget_bias": cfg.forget_bias,
    }


def build_network(
    model: ModelConfig, task: str, data_info: DataInfo, per_step: bool = False
) -> nn.Module:
    """The plain network for a task from its model config and the data's dimensions."""
    if task == "language_model":
        return CharRNN(data_info.out_features, model.embedding_dim, **encoder_kwargs(model))

    def one() -> SequenceModel:
        return SequenceModel(
            data_info.input_size,
            data_info.out_features,
            readout="per_step" if per_step else model.readout,
            seq_len=data_info.seq_len,
            patch=model.patch,
            **encoder_kwargs(model),
        )

    if data_info.ensemble > 1:
        members = [one() for _ in range(data_info.ensemble)]
        return FoldEnsemble(members, classification=task == "classification")
    return one()
