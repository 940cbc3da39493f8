"""The user's data url travels one way from the spec to the batches and visits each module
once: the modules it passes through form a tree, each entered from one module only."""

from __future__ import annotations

import sys
from collections import defaultdict

import pytest

from lightning_modules.data import build_data, build_datamodule
from lightning_modules.datasets.sequences import SequencesData
from tests.support.sequence_data import sensor_sequences, write_parquet


def _module_of(frame) -> str:
    """The project module a frame runs in (its nearest project caller), else `caller`."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("lightning_modules"):
            return name
        frame = frame.f_back
    return "caller"


def _url_path(cfg: SequencesData) -> dict[tuple[str, str], str]:
    """(caller module, callee module) -> the first function called, for every call into a
    project function that holds the data section or its url, from build_data to a batch."""
    edges: dict[tuple[str, str], str] = {}

    def profile(frame, event, _arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("lightning_modules"):
            return
        if frame.f_locals.get("self") is cfg:  # the spec's own properties: reading it
            return
        values = frame.f_locals.values()
        if any(v is cfg or (isinstance(v, str) and v == cfg.url) for v in values):
            caller = _module_of(frame.f_back)
            if caller != module:
                edges.setdefault((caller, module), frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        data = build_data(cfg, 0)
        loader = build_datamodule(cfg, data, 16, 0)
        loader.setup("fit")
        next(iter(loader.train_dataloader()))
    finally:
        sys.setprofile(None)
    return edges


def _back_edges(edges) -> list[tuple[str, str]]:
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    def reaches(a: str, b: str, seen: frozenset) -> bool:
        return b in graph[a] or any(reaches(c, b, seen | {a}) for c in graph[a] - seen)

    return [(a, b) for a, b in edges if reaches(b, a, frozenset())]


@pytest.mark.parametrize("reader", ["memory", "stream"])
def test_the_data_url_goes_one_way_from_spec_to_batches(tmp_path, reader):
    xs, labels, _ = sensor_sequences(n=120)
    path = write_parquet(tmp_path / "data.parquet", xs, labels)
    edges = _url_path(SequencesData(url=str(path), reader=reader))
    modules = {m for edge in edges for m in edge}
    # the path was followed: the registry entry, the reader, the splits, the batches' source
    assert {
        "lightning_modules.datasets.entry",
        "lightning_modules.data.sequence_files",
        "lightning_modules.data.splits",
        "lightning_modules.data.base",
    } <= modules, sorted(edges)
    assert _back_edges(edges) == [], sorted(edges)  # one direction
    callers = defaultdict(set)
    for caller, callee in edges:
        callers[callee].add(caller)
    assert {m: c for m, c in callers.items() if len(c) > 1} == {}  # each module entered once


def test_a_return_to_a_module_already_left_is_found():
    edges = {("a", "b"): "f", ("b", "c"): "g", ("c", "a"): "h", ("a", "d"): "i"}
    assert sorted(_back_edges(edges)) == [("a", "b"), ("b", "c"), ("c", "a")]
