"""Connecting to Ray: the cluster in `RAY_ADDRESS`, or an embedded one bound to loopback."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import NoReturn

import ray

from tune import outcome as O
from tune.compat import (
    quiet_ray_off_main_thread_notice,
    quiet_ray_token_auth_notice,
    ray_loopback_flag,
)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray uses 127.0.0.1, not the host's IP


def keep_ray_on_loopback() -> None:
    """An embedded Ray on 127.0.0.1 (what a laptop or CI machine should expose: nothing).

    Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` once, when imported, so setting it later only
    reaches the processes Ray starts: this process's copy of the flag is set too. An explicit
    `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1` in the environment is respected.
    """
    os.environ.setdefault(LOOPBACK_ENV, "0")
    ray_loopback_flag(LOOPBACK_ENV)


_early: dict = {}  # the background start (`start_early`): its "started" event, its error if any


def ensure_ray(
    num_cpus: int | None = None, log_level: int = logging.INFO, warm: bool = False
) -> None:
    """Connect to `RAY_ADDRESS` if set, else start an embedded Ray bound to loopback (or finish
    the start `start_early` began). `log_level`: Ray's own loggers in this process (WARNING:
    no "Started a local Ray"). `warm`: a job's driver, which connects to the warm local Ray of
    its environment instead (tune.warm), unless that is turned off."""
    started = _early.pop("started", None)
    if started is not None:
        started.wait()
        if "error" in _early:
            raise _early.pop("error")
        exit_on_sigterm()  # only the main thread can
        return
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=log_level)
        exit_on_sigterm()
        return
    _start_embedded(num_cpus, log_level, warm)
    exit_on_sigterm()


def start_early(
    log_level: int = logging.INFO, warm: bool = False, trials: int | None = None
) -> None:
    """Starts the embedded Ray on a background thread, so that its processes and its workers'
    imports run while this process imports its own stack; `ensure_ray` waits for it. With
    `RAY_ADDRESS` (a cluster) it does nothing.

    The thread then stays (asleep) for the life of the process: Ray's GCS and raylet are
    started with a parent-death signal, which Linux sends when the thread that started them
    ends, not the process."""
    if os.environ.get("RAY_ADDRESS") or ray.is_initialized() or "started" in _early:
        return
    started = _early["started"] = threading.Event()

    def start() -> None:
        try:
            _start_embedded(None, log_level, warm, trials)
        except BaseException as e:  # noqa: BLE001 - raised again by ensure_ray
            _early["error"] = e
        finally:
            started.set()
        threading.Event().wait()  # see above: Ray's processes live as long as this thread

    threading.Thread(target=start, name="rnntune-ray-start", daemon=True).start()


def _start_embedded(
    num_cpus: int | None, log_level: int, warm: bool = False, trials: int | None = None
) -> None:
    keep_ray_on_loopback()
    if log_level >= logging.WARNING:
        quiet_ray_token_auth_notice()  # every start: nothing for a user to act on
    head = _warm_ray(trials) if warm and num_cpus is None else None
    with quiet_ray_off_main_thread_notice():
        if head is not None:  # Ray ends this job's workers when this process exits or dies
            ray.init(address=head.address, log_to_driver=False, logging_level=log_level)
            return
        ray.init(
            address="local",  # never join a cluster some other `ray start` left on this machine
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=log_level,
        )
    start_watchdog()


def _warm_ray(trials: int | None):
    """The warm local Ray (tune.warm), or None: turned off, or it failed to start (said in one
    line; this job then starts a Ray of its own). `trials`: the job's, when known (a new warm
    Ray starts no more idle workers than that while the job's driver imports)."""
    try:
        from tune import warm
    except ImportError:  # fcntl: not on Windows, where each run starts its own Ray
        return None
    try:
        return warm.connect(trials)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"rnntune: warning: no warm Ray ({e}); starting one for this job", file=sys.stderr)
        return None


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


def exit_after_job(code: int) -> NoReturn:
    """Ends a process whose job is done and said: Ray shut down, then `quick_exit`, without the
    interpreter's own teardown of modules and threads, which took ~2.7 s after every
    `rnntune run` (bench/fixed_cost.py's `teardown`)."""
    from tune.commands import quick_exit

    if ray.is_initialized():
        ray.shutdown()
    quick_exit(code)
