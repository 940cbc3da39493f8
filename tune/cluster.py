"""Connecting to Ray: the cluster in `RAY_ADDRESS`, or an embedded one bound to loopback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import ray

from tune import outcome as O
from tune.compat import quiet_ray_token_auth_notice, ray_loopback_flag

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses 127.0.0.1, not the host's IP


def keep_ray_on_loopback() -> None:
    """An embedded Ray on 127.0.0.1 (what a laptop or CI machine should expose: nothing).

    Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` once, when imported, so setting it later only
    reaches the processes Ray starts: this process's copy of the flag is set too. An explicit
    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1` in the environment is respected.
    """
    os.environ.setdefault(LOOPBACK_ENV, "0")
    ray_loopback_flag(LOOPBACK_ENV)


def ensure_ray(num_cpus: int | None = None, log_level: int = logging.INFO) -> None:
    """Connect to `RAY_ADDRESS` if set, else start an embedded Ray bound to loopback.
    `log_level`: Ray's own loggers in this process (WARNING: no "Started a local Ray")."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=log_level)
        exit_on_sigterm()
        return
    keep_ray_on_loopback()
    if log_level >= logging.WARNING:
        quiet_ray_token_auth_notice()  # every start: nothing for a user to act on
    ray.init(
        address="local",  # never join a cluster some other `ray start` left on this machine
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=log_level,
    )
    exit_on_sigterm()
    start_watchdog()


def exit_on_sigterm() -> None:
    """SIGTERM (`rnntune cancel` through Ray's stop_job, `kill`, a container stop) exits through
    Python with the `stopped` exit code, so the driver closes the job's runs as stopped.

    Installed again once Ray has started: `ray.init` puts abseil's failure handler in front,
    which arms a 3 s SIGALRM abort on SIGTERM, so a stop that takes longer to close its runs
    died with SIGABRT (exit -6). Only the main thread can set handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, frame) -> None:
        signal.alarm(0)  # an abort abseil may have armed already
        sys.exit(O.EXIT_CODE[O.STOPPED])

    signal.signal(signal.SIGTERM, stop)


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
