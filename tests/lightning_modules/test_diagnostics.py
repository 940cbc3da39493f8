"""Per-timestep gradient norms: the stepped re-run matches the fused kernels; plots are written."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.diagnostics import (
    gradient_norms_over_time,
    plot_gradient_norms,
    unrolled_encoder,
)
from lightning_modules.encoder import CELL_TYPES
from lightning_modules.models import SequenceModel


@pytest.mark.parametrize("cell_type", CELL_TYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unrolled_matches_fused(cell_type, bidirectional):
    torch.manual_seed(0)
    model = SequenceModel(
        3, 2, cell_type=cell_type, hidden_size=6, num_layers=2, bidirectional=bidirectional
    ).eval()
    x = torch.randn(4, 9, 3)
    out, final, _ = model.encoder(x)
    out2, final2, _ = unrolled_encoder(model.encoder, x)
    assert torch.allclose(out, out2, atol=1e-5)
    assert torch.allclose(final, final2, atol=1e-5)


def test_tanh_rnn_gradient_vanishes_back_in_time(tmp_path):
    torch.manual_seed(0)
    model = SequenceModel(2, 1, cell_type="rnn_tanh", hidden_size=16)
    x, y = torch.randn(8, 60, 2), torch.randn(8, 1)
    norms = gradient_norms_over_time(model, x, lambda p: F.mse_loss(p, y))
    assert len(norms) == 60
    assert all(n >= 0 for n in norms)
    assert norms[0] < 1e-2 * norms[-1]  # the seed's vanishing-gradient picture
    png = plot_gradient_norms(norms, tmp_path / "g.png", "test")
    assert png.stat().st_size > 1000
    assert all(p.grad is None for p in model.parameters())  # leaves no gradients behind
