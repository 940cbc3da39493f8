"""The launchers' port choice: outside the ranges other processes bind on their own."""

import multiprocessing
import socket

from tune import local


def test_free_ports_lie_between_rays_worker_ports_and_the_ephemeral_range():
    ports = [local.free_port() for _ in range(40)]
    low, high = local.OWN_PORTS
    ephemeral = local._ephemeral_low() or high
    assert all(low <= p < min(high, ephemeral) for p in ports), ports
    assert len(set(ports)) == len(ports)  # each one claimed: never handed out twice


def _ports(n: int) -> list[int]:
    return [local.free_port() for _ in range(n)]


def test_two_processes_never_get_the_same_port(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "OWN_PORTS", (20000, 20300))  # crowded: collisions would show
    monkeypatch.setattr(local, "PORT_CLAIMS", tmp_path / "claims")
    with multiprocessing.get_context("fork").Pool(2) as pool:
        first, second = pool.map(_ports, [100, 100])
    assert not set(first) & set(second), set(first) & set(second)
    assert len(set(first)) == 100 and len(set(second)) == 100


def test_a_bound_port_or_a_live_claim_is_skipped(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "PORT_CLAIMS", tmp_path / "claims")
    with socket.socket() as taken:
        taken.bind((local.LOOPBACK, 0))
        busy = taken.getsockname()[1]
        monkeypatch.setattr(local, "OWN_PORTS", (busy, busy + 1))
        monkeypatch.setattr(local, "_ephemeral_low", lambda: None)
        assert not local._bindable(busy)
    assert local._claim(busy) and not local._claim(busy)  # the second caller is refused
