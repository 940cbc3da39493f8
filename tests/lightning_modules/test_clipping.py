"""Gradient clipping by norm, by value and AutoClip, with the statistics we log."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import get_total_norm

from lightning_modules.clipping import GradientClipper


def _model_with_grads(scale: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    (model(torch.randn(16, 4)).sum() * scale).backward()
    return model


def _norm(model: nn.Module) -> float:
    return float(get_total_norm([p.grad for p in model.parameters()]))


@pytest.mark.parametrize("threshold", [0.01, 0.5, 3.0])
def test_norm_clipping_bounds_total_norm(threshold):
    model = _model_with_grads(10.0)
    before = _norm(model)
    norm, clipped = GradientClipper("norm", threshold)(model.parameters())
    assert float(norm) == pytest.approx(before, rel=1e-5)  # reports the pre-clip norm
    assert _norm(model) <= threshold * (1 + 1e-5)
    assert bool(clipped) == (before > threshold)


def test_value_clipping_bounds_every_element():
    model = _model_with_grads(10.0)
    norm, clipped = GradientClipper("value", 0.05)(model.parameters())
    assert bool(clipped)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) <= 0.05 + 1e-7


def test_autoclip_follows_percentile_of_history():
    clipper = GradientClipper("auto", None, percentile=25)
    seen = []
    for step, scale in enumerate([1.0, 5.0, 0.5, 3.0, 8.0, 2.0, 0.2, 4.0]):
        model = _model_with_grads(scale, seed=step)
        seen.append(_norm(model))
        norm, clipped = clipper(model.parameters())
        expected = float(np.percentile(seen, 25))
        assert clipper.last_threshold == pytest.approx(expected, rel=1e-5)
        assert _norm(model) <= expected * (1 + 1e-5)
        assert bool(clipped) == (seen[-1] > expected)


def test_autoclip_cap_and_no_clipping():
    clipper = GradientClipper("auto", 0.001, percentile=90)
    model = _model_with_grads(5.0)
    clipper(model.parameters())
    assert clipper.last_threshold == 0.001
    model = _model_with_grads(5.0)
    before = _norm(model)
    _, clipped = GradientClipper("norm", None)(model.parameters())
    assert _norm(model) == pytest.approx(before) and not bool(clipped)


def test_bad_clip_settings_rejected():
    with pytest.raises(ValueError, match="grad_clip"):
        GradientClipper("norm", -1.0)
    with pytest.raises(ValueError, match="grad_clip_algorithm"):
        GradientClipper("percentile", 1.0)
