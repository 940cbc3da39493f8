"""The launchers' port choice: outside the ranges other processes bind on their own."""

import json
import socket
import subprocess
import sys
import time

from tests.support.paths import ROOT
from tune import local


def test_free_ports_lie_between_rays_worker_ports_and_the_ephemeral_range():
    ports = [local.free_port() for _ in range(40)]
    low, high = local.OWN_PORTS
    ephemeral = local._ephemeral_low() or high
    assert all(low <= p < min(high, ephemeral) for p in ports), ports
    assert len(set(ports)) == len(ports)  # each one claimed: never handed out twice


# Two separate interpreters (not a fork of this one: a fork of a process with threads, as a
# pytest worker has after in-process jobs, can hang on a lock a thread held at the fork). Each
# waits for the `go` file so that both choose their ports at the same time.
PORTS_SCRIPT = """
import json, os, sys, time
from pathlib import Path
from tune import local
local.OWN_PORTS = (20000, 20300)  # crowded: collisions would show
local.PORT_CLAIMS = Path(sys.argv[1])
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
print(json.dumps([local.free_port() for _ in range(100)]))
"""


def test_two_processes_never_get_the_same_port(tmp_path):
    go = tmp_path / "go"
    args = [sys.executable, "-c", PORTS_SCRIPT, str(tmp_path / "claims"), str(go)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    time.sleep(0.5)
    go.touch()
    first, second = (json.loads(p.communicate(timeout=60)[0]) for p in procs)
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
