"""The recurrent encoder and readouts: shapes, directions, packing, initialisation."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_modules.encoder import CELL_TYPES, LockedDropout, RecurrentEncoder
from lightning_modules.models import CharRNN, SequenceModel

B, T, F, H = 3, 7, 5, 8


@pytest.mark.parametrize(
    "cell_type,num_layers,bidirectional",
    list(itertools.product(CELL_TYPES, (1, 2), (False, True))),
)
def test_shapes_every_cell_depth_direction(cell_type, num_layers, bidirectional):
    enc = RecurrentEncoder(F, cell_type, H, num_layers, bidirectional)
    out, final, _ = enc(torch.randn(B, T, F))
    d = 2 if bidirectional else 1
    assert out.shape == (B, T, d * H)
    assert final.shape == (B, d * H)
    for readout in ("last", "mean", "linear_all"):
        model = SequenceModel(
            F,
            4,
            readout=readout,
            seq_len=T,
            cell_type=cell_type,
            hidden_size=H,
            num_layers=num_layers,
            bidirectional=bidirectional,
        )
        assert model(torch.randn(B, T, F)).shape == (B, 4)
    per_step = SequenceModel(
        F,
        4,
        readout="per_step",
        cell_type=cell_type,
        hidden_size=H,
        num_layers=num_layers,
        bidirectional=bidirectional,
    )
    assert per_step(torch.randn(B, T, F)).shape == (B, T, 4)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_backward_direction_sees_whole_sequence(cell_type):
    torch.manual_seed(0)
    enc = RecurrentEncoder(F, cell_type, H, num_layers=2, bidirectional=True).eval()
    x = torch.randn(B, T, F)
    out, final, _ = enc(x)
    # The backward direction's final state is the one it reaches at step 0, not at step T-1
    # (which it reached after reading a single element).
    assert torch.allclose(final[:, H:], out[:, 0, H:], atol=1e-6)
    assert torch.allclose(final[:, :H], out[:, -1, :H], atol=1e-6)
    x2 = x.clone()
    x2[:, 0] += 1.0  # change only the first step
    _, final2, _ = enc(x2)
    assert not torch.allclose(final[:, H:], final2[:, H:], atol=1e-4)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_padding_does_not_change_predictions(cell_type, bidirectional, readout):
    torch.manual_seed(0)
    model = SequenceModel(
        F,
        3,
        readout=readout,
        cell_type=cell_type,
        hidden_size=H,
        num_layers=2,
        bidirectional=bidirectional,
    ).eval()
    short = torch.randn(1, 4, F)
    alone = model(short, torch.tensor([4]))
    padded = torch.cat([short, 100 * torch.randn(1, T - 4, F)], dim=1)  # junk after the end
    batch = torch.cat([padded, torch.randn(1, T, F)])
    together = model(batch, torch.tensor([4, T]))
    assert torch.allclose(alone[0], together[0], atol=1e-5)


def test_lstm_forget_bias_initialised_to_one():
    enc = RecurrentEncoder(F, "lstm", H, num_layers=2, bidirectional=True, forget_bias=1.0)
    for name, p in enc.rnn.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.all(p[H : 2 * H] == 1.0)
        if name.startswith("bias_hh"):
            assert torch.all(p[H : 2 * H] == 0.0)


def test_unknown_cell_type_names_field():
    with pytest.raises(ValueError, match="cell_type.*'lstn'"):
        RecurrentEncoder(F, "lstn", H)


def test_dropout_only_between_layers():
    assert RecurrentEncoder(F, "gru", H, num_layers=3, dropout=0.3).rnn.dropout == 0.3
    assert RecurrentEncoder(F, "gru", H, num_layers=1, dropout=0.3).rnn.dropout == 0.0


def test_locked_dropout_mask_shared_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    y = drop(torch.ones(4, 10, 16))
    assert torch.equal(y[:, :1].expand_as(y), y)  # same mask at every step
    assert (y == 0).any() and (y == 2.0).any()
    assert torch.equal(drop.eval()(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


def test_char_rnn_is_unidirectional_and_carries_state():
    net = CharRNN(
        vocab_size=11, embedding_dim=6, cell_type="lstm", hidden_size=H, bidirectional=True
    ).eval()
    assert net.encoder.num_directions == 1
    tokens = torch.randint(0, 11, (2, 12))
    full, _ = net(tokens)
    first, state = net(tokens[:, :5])
    second, _ = net(tokens[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)
