"""Per-timestep gradient norms ||dL/dh_t||: the vanishing/exploding-gradient picture over time.

Fused cuDNN/ATen kernels never expose h_t as graph nodes, so this re-runs the encoder one step at
a time with `torch.*_cell` and the module's own weights (identical numbers, checked by a test),
keeps every top-layer state h_t, and back-propagates the task loss into them. Diagnostics only:
training always uses the fused kernels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lightning_modules.encoder import RecurrentEncoder

CELL_FUNCTIONS = {
    "lstm": torch.lstm_cell,
    "gru": torch.gru_cell,
    "rnn_tanh": torch.rnn_tanh_cell,
    "rnn_relu": torch.rnn_relu_cell,
}


def _run_direction(enc: RecurrentEncoder, layer: int, reverse: bool, inputs: list[torch.Tensor]):
    """One layer, one direction, stepped; returns the hidden state h_t for every t (in time order)."""
    sfx = f"_l{layer}" + ("_reverse" if reverse else "")
    rnn = enc.rnn
    weights = [getattr(rnn, f"{n}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    batch = inputs[0].size(0)
    h = inputs[0].new_zeros(batch, enc.hidden_size)
    c = h.clone() if enc.cell_type == "lstm" else None
    cell = CELL_FUNCTIONS[enc.cell_type]
    states: list[torch.Tensor] = [h] * len(inputs)
    order = range(len(inputs) - 1, -1, -1) if reverse else range(len(inputs))
    for t in order:
        if c is not None:
            h, c = cell(inputs[t], (h, c), *weights)
        else:
            h = cell(inputs[t], h, *weights)
        states[t] = h
    return states


def unrolled_encoder(enc: RecurrentEncoder, x: torch.Tensor):
    """Step-by-step equivalent of `enc(x)` in eval mode (full-length sequences).

    Returns outputs (B, T, D*H), final states (B, D*H) and the top layer's per-step state
    tensors [[h_t forward], [h_t backward]] that carry gradients.
    """
    inputs = list(x.unbind(1))  # T tensors of (B, F)
    directions: list[list[torch.Tensor]] = []
    for layer in range(enc.num_layers):
        directions = [
            _run_direction(enc, layer, rev, inputs) for rev in (False, True)[: enc.num_directions]
        ]
        inputs = [torch.cat([d[t] for d in directions], dim=-1) for t in range(len(inputs))]
    out = torch.stack(inputs, dim=1)
    final = torch.cat(
        [directions[0][-1]] + ([directions[1][0]] if enc.num_directions == 2 else []), -1
    )
    return out, final, directions


def gradient_norms_over_time(net: nn.Module, batch, loss_fn) -> list[float]:
    """||dL/dh_t|| for t = 0..T-1 of the top layer (both directions' states together).

    `net` is a `SequenceModel` or `CharRNN`; `loss_fn(prediction) -> scalar` closes over targets.
    """
    was_training = net.training
    net.eval()
    with torch.enable_grad():
        if hasattr(net, "embedding"):  # CharRNN
            x = net.embedding(batch)
            out, final, directions = unrolled_encoder(net.encoder, x)
            pred = net.head(out)
        else:
            out, final, directions = unrolled_encoder(net.encoder, batch)
            pred = net.head(net.features(out, final, None))
        states = [h for d in directions for h in d]
        for h in states:
            h.retain_grad()
        loss_fn(pred).backward()
    steps = len(directions[0])
    norms = []
    for t in range(steps):
        sq = sum(d[t].grad.pow(2).sum() for d in directions if d[t].grad is not None)
        norms.append(float(torch.as_tensor(sq).sqrt()))
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    return norms


def plot_gradient_norms(norms: list[float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.semilogy(range(len(norms)), [max(n, 1e-30) for n in norms], marker=".")
    ax.set_xlabel("time step t")
    ax.set_ylabel(r"$\|\partial L / \partial h_t\|$")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
