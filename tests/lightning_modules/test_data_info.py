"""The typed, versioned data description: round trips, the pre-typed layout, refusals."""

from __future__ import annotations

import pytest
import torch

from deploy.bundle.pyfunc import load_bundle, save_bundle
from lightning_modules.config import TrainSpec
from lightning_modules.data_info import DATA_INFO_VERSION, DataInfo, ImageScaling
from lightning_modules.models import build_network
from lightning_modules.preprocessing import Preprocessing

PREP = Preprocessing(["a", "b"], [0.5, 1.0], [2.0, 1.0], [0.5, 1.0], classes=["no", "yes"])
KINDS = {
    "image": DataInfo(
        input_size=28, out_features=10, seq_len=28, image=ImageScaling(scale=1 / 255)
    ),
    "text": DataInfo(input_size=5, out_features=5, seq_len=64, vocabulary=["\ufffd", *"abcd"]),
    "sequences": DataInfo(input_size=2, out_features=2, seq_len=40, preprocessing=PREP),
}


@pytest.mark.parametrize("kind", KINDS)
def test_data_info_round_trips_through_plain_data(kind):
    info = KINDS[kind]
    stored = info.dump()
    assert stored["version"] == DATA_INFO_VERSION
    assert DataInfo.load(stored, "here") == info


def test_data_info_reads_the_untyped_layout_of_version_1():
    v1 = {"input_size": 2, "out_features": 2, "seq_len": 40}
    legacy = {**v1, "extras": {"preprocessing": PREP.to_dict()}}
    assert DataInfo.load(legacy, "old.ckpt") == KINDS["sequences"]
    pixels = {**v1, "extras": {"preprocessing": {"scale": 0.0625, "permuted": True}}}
    assert DataInfo.load(pixels, "old.ckpt").image == ImageScaling(scale=0.0625, permuted=True)
    text = {**v1, "extras": {"vocabulary": ["\ufffd", "a"]}}
    assert DataInfo.load(text, "old.ckpt").vocabulary == ["\ufffd", "a"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**KINDS["text"].dump(), "version": 7}, "version 7; this rnntune reads versions 1 and 2"),
        ({**KINDS["text"].dump(), "input_size": 0}, "malformed: input_size: Input should be"),
        ({"input_size": 3, "extras": {}}, "malformed: missing 'out_features'"),
        ("not a mapping", "no data description"),
    ],
)
def test_data_info_refuses_what_it_cannot_read_by_name(raw, message):
    with pytest.raises(ValueError, match="^bundle.pt: ") as e:
        DataInfo.load(raw, "bundle.pt")
    assert message in str(e.value)


def test_a_bundle_from_another_release_is_refused_with_its_path(tmp_path):
    spec = TrainSpec.model_validate({"data": {"name": "digits"}, "model": {"hidden_size": 4}})
    info = DataInfo(input_size=8, out_features=10, seq_len=8)
    path = save_bundle(build_network(spec.model, spec.task, info), spec, info, tmp_path / "m.pt")
    net, _, loaded = load_bundle(path)
    assert loaded == info and net(torch.zeros(1, 8, 8)).shape == (1, 10)

    raw = torch.load(path, weights_only=True)
    raw["data_info"]["version"] = DATA_INFO_VERSION + 1
    torch.save(raw, path)
    with pytest.raises(ValueError, match=f"model bundle {path}: data description version 3"):
        load_bundle(path)
