"""Untrusted JSON/YAML: bounded nesting, no duplicate keys, numbers a float can hold."""

from __future__ import annotations

import pytest

from lightning_modules.config import SpecError, read_spec_file
from lightning_modules.documents import DocumentError, load_json, load_yaml


@pytest.mark.parametrize(
    "load, text, message",
    [
        (load_json, "[" * 10_000 + "]" * 10_000, "nested deeper than 64"),
        (load_json, '{"a": ' * 70 + "1" + "}" * 70, "nested deeper than 64"),
        (load_yaml, "[" * 10_000 + "]" * 10_000, "nested deeper than 64"),
        (load_json, '{"optim": {"lr": 1' + "0" * 400 + "}}", "optim.lr: number too large"),
        (
            load_yaml,
            "search:\n  num_samples: 1" + "0" * 400,
            "search.num_samples: number too large",
        ),
        (load_yaml, "name: a\nname: b\n", "duplicate key 'name' (line 2)"),
        (load_yaml, "data:\n  name: mnist1d\n  name: text\n", "duplicate key 'name'"),
        (load_json, "{not json", "not valid JSON"),
        (load_yaml, "a: [1, 2", "not valid YAML"),
    ],
)
def test_hostile_documents_answer_one_clear_error(load, text, message):
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(text)


def _laughs(levels: int = 9, extra_keys: bool = False) -> str:
    """The "billion laughs": 9 levels of 9 aliases, ~400 bytes, 387 million values."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    if not extra_keys:  # inside a spec section instead of beside it
        lines = ["data:"] + ["  " + line for line in lines]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("extra_keys", [False, True])
def test_an_alias_bomb_is_refused_at_once(extra_keys):
    import time

    start = time.perf_counter()
    with pytest.raises(DocumentError, match="aliases expand to over 200,000 values"):
        load_yaml(_laughs(extra_keys=extra_keys))
    assert time.perf_counter() - start < 1.0
    with pytest.raises(DocumentError, match="refers to itself"):
        load_yaml("a: &a [1, *a]\n")


def test_ordinary_documents_and_yaml_merges_still_load():
    assert load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n") == {
        "base": {"x": 1},
        "other": {"x": 1, "y": 2},
    }
    assert load_json('{"a": [1.5, -2, 1e300]}') == {"a": [1.5, -2, 1e300]}


def test_spec_files_refuse_duplicates_and_folders(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("data: {name: mnist1d}\nmodel: {hidden_size: 8}\nmodel: {hidden_size: 9}\n")
    with pytest.raises(SpecError, match="duplicate key 'model'"):
        read_spec_file(dup)
    with pytest.raises(SpecError, match="a folder, not a spec file"):
        read_spec_file(tmp_path)


class _Payload:
    """Unpickling this runs code (writes a marker file): what a hostile checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_and_bundles_load_without_running_code(tmp_path):
    import pickle

    import torch

    from deploy.bundle.pyfunc import load_bundle
    from lightning_modules.training import load_module

    marker = tmp_path / "pwned"
    hostile = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": _Payload(str(marker)), "state_dict": {}}, hostile)
    for load in (load_module, load_bundle):
        with pytest.raises(pickle.UnpicklingError):
            load(hostile)
    assert not marker.exists()
