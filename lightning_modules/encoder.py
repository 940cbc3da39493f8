"""Recurrent encoder: one fused torch.nn RNN/LSTM/GRU chosen by name, packed for variable lengths.

Plain `nn.Module`, no Lightning: it is what `deploy/` serves and what benchmarks time directly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lightning_modules.sections import CELL_TYPES


def _rnn_class(cell_type: str) -> tuple[type[nn.RNNBase], dict]:
    if cell_type == "lstm":
        return nn.LSTM, {}
    if cell_type == "gru":
        return nn.GRU, {}
    if cell_type in ("rnn_tanh", "rnn_relu"):
        return nn.RNN, {"nonlinearity": cell_type.removeprefix("rnn_")}
    raise ValueError(f"cell_type: unknown cell type {cell_type!r}; choose one of {CELL_TYPES}")


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared by every time step (Gal & Ghahramani)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F)
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class RecurrentEncoder(nn.Module):
    """A stack of recurrent layers over batch-first sequences.

    `dropout` acts between stacked layers (as in torch.nn), never across time; `input_dropout`
    and `output_dropout` are locked (variational) masks on the inputs and top-layer outputs.
    """

    def __init__(
        self,
        input_size: int,
        cell_type: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        output_dropout: float = 0.0,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        rnn_cls, extra = _rnn_class(cell_type)
        self.cell_type = cell_type
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1
        self.rnn = rnn_cls(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            **extra,
        )
        self.input_dropout = LockedDropout(input_dropout)
        self.output_dropout = LockedDropout(output_dropout)
        if cell_type == "lstm":
            self._init_forget_bias(forget_bias)

    @property
    def output_size(self) -> int:
        return self.hidden_size * self.num_directions

    def _init_forget_bias(self, value: float) -> None:
        # Gates are stacked (input, forget, cell, output); the two biases add, so put it all in one.
        h = self.hidden_size
        with torch.no_grad():
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    p[h : 2 * h].fill_(value)
                elif name.startswith("bias_hh"):
                    p[h : 2 * h].zero_()

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """Encode `x` (B, T, F) with valid `lengths` (B,).

        Returns per-step outputs (B, T, D*H) (zero past each length), the final state of the top
        layer (B, D*H) -- the forward direction at each sequence's last valid step and the
        backward direction after it has read the whole sequence back to step 0 -- and the raw
        recurrent state (for carrying across truncated-BPTT windows).
        """
        batch, steps, _ = x.shape
        x = self.input_dropout(x)
        # Packing costs time; when every sequence is full length the fused call is identical.
        packed = lengths is not None and bool((lengths < steps).any())
        if packed:
            inp = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, new_state = self.rnn(inp, state)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
        else:
            out, new_state = self.rnn(x, state)
        h_n = new_state[0] if isinstance(new_state, tuple) else new_state  # (L*D, B, H)
        top = h_n.view(self.num_layers, self.num_directions, batch, self.hidden_size)[-1]
        final = top.transpose(0, 1).reshape(batch, self.output_size)  # (B, D*H)
        return (
            self.output_dropout(out),
            self.output_dropout(final.unsqueeze(1)).squeeze(1),
            new_state,
        )
