"""Networks: patching steps (k consecutive steps as one input) and the fold ensemble."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.config import ModelConfig, TrainSpec
from lightning_modules.data_info import DataInfo
from lightning_modules.models import FoldEnsemble, build_network, patch_steps


def test_patching_groups_consecutive_steps_and_shortens_lengths():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # (B, T, F)
    x[1, 3:] = 0  # the second sequence has 3 valid steps
    out, lengths = patch_steps(x, torch.tensor([5, 3]), 2)
    assert out.shape == (2, 3, 6)  # ceil(5/2) steps of 2 x 3 features
    assert torch.equal(out[0, 0], torch.cat([x[0, 0], x[0, 1]]))
    assert torch.equal(out[0, 2], torch.cat([x[0, 4], torch.zeros(3)]))  # zero-filled tail
    assert lengths.tolist() == [3, 2]


def test_a_patched_network_reads_raw_steps_of_any_length():
    info = DataInfo(input_size=2, out_features=3, seq_len=40)
    net = build_network(
        ModelConfig(cell_type="gru", hidden_size=8, patch=4), "classification", info
    )
    assert net.encoder.rnn.input_size == 8  # 4 steps x 2 features
    out = net(torch.randn(3, 37, 2), torch.tensor([37, 20, 5]))
    assert out.shape == (3, 3)
    # The readout sees the same sequence whatever padding follows it
    a = net.eval()(torch.randn(1, 9, 2), None)
    assert a.shape == (1, 3)


def test_patching_a_per_step_task_is_refused_by_name():
    with pytest.raises(ValueError, match="model.patch"):
        TrainSpec.model_validate({"data": {"name": "copy"}, "model": {"patch": 2}})


def test_an_ensemble_of_one_config_builds_k_independent_members():
    info = DataInfo(input_size=2, out_features=4, seq_len=10, ensemble=3)
    net = build_network(ModelConfig(cell_type="gru", hidden_size=8), "classification", info)
    assert isinstance(net, FoldEnsemble) and len(net.members) == 3
    x = torch.randn(5, 10, 2)
    probs = net(x).softmax(-1)
    assert torch.allclose(probs.sum(-1), torch.ones(5))
    expected = torch.stack([m(x).softmax(-1) for m in net.members]).mean(0)
    assert torch.allclose(probs, expected, atol=1e-6)
