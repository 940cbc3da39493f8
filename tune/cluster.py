"""Connecting to Ray: the cluster in `RAY_ADDRESS`, or an embedded one bound to loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ray
from ray._private import ray_constants

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses 127.0.0.1, not the host's IP


def keep_ray_on_loopback() -> None:
    """An embedded Ray on 127.0.0.1 (what a laptop or CI machine should expose: nothing).

    Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` once, when imported, so setting it later only
    reaches the processes Ray starts: this process's copy of the flag is set too. An explicit
    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1` in the environment is respected.
    """
    os.environ.setdefault(LOOPBACK_ENV, "0")
    if not ray_constants.env_bool(LOOPBACK_ENV, True):
        ray_constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connect to `RAY_ADDRESS` if set, else start an embedded Ray bound to loopback."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    keep_ray_on_loopback()
    ray.init(
        address="local",  # never join a cluster some other `ray start` left on this machine
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
    )
    start_watchdog()


def start_watchdog() -> None:
    """A detached `tune.watchdog` that stops this process's Ray if this process is killed."""
    subprocess.Popen(
        [sys.executable, "-m", "tune.watchdog", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a group kill spares it
        cwd=str(Path(__file__).resolve().parents[1]),
    )
