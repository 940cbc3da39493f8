"""Ends an embedded Ray when the `rnntune run` that started it dies without cleaning up (SIGKILL).

Ray's own processes (GCS, raylet, the dashboard and runtime-env agents, workers) are children
of the driver; a driver killed outright never runs `ray.shutdown()`, and some of them outlive
it. This process, started detached by `tune.cluster.ensure_ray`, remembers the driver's
descendants every second; when the driver is gone it waits a grace period (a normal exit shuts
Ray down itself), then stops whatever of them is still alive: SIGTERM, then SIGKILL.

    python -m tune.watchdog DRIVER_PID
"""

from __future__ import annotations

import os
import sys
import time

import psutil

from tune.local import started

POLL_S = 1.0
GRACE_S = 5.0  # after the driver's end: time for its own `ray.shutdown()` to finish
TERM_WAIT_S = 5.0


def _descendants(driver: psutil.Process) -> dict[int, float]:
    """pid -> start time of every process under the driver (it tells a recycled pid)."""
    found = {}
    for p in driver.children(recursive=True):
        try:
            found[p.pid] = started(p.pid)
        except psutil.Error:
            continue
    return found


def _alive(pids: dict[int, float]) -> list[psutil.Process]:
    procs = []
    for pid, since in pids.items():
        try:
            p = psutil.Process(pid)
            if started(pid) == since:
                procs.append(p)
        except psutil.Error:
            continue
    return procs


def watch(driver_pid: int) -> int:
    """Returns how many leftover processes it had to stop."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return 0
    seen: dict[int, float] = {}
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            seen.update(_descendants(driver))
        except psutil.Error:
            break
        time.sleep(POLL_S)
    time.sleep(GRACE_S)
    left = [p for p in _alive(seen) if p.pid not in (driver_pid, os.getpid())]
    end_processes(left, TERM_WAIT_S)
    return len(left)


def end_processes(procs: list[psutil.Process], grace: float) -> None:
    """SIGTERM to all, SIGKILL to those still alive after `grace` seconds."""
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


if __name__ == "__main__":
    sys.exit(0 if watch(int(sys.argv[1])) >= 0 else 1)
