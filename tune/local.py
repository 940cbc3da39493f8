"""What this user's local processes share: the rnntune home folder, and loopback ports.

The launchers of `rnntune up` (service.stack), the warm Ray of `rnntune run` (tune.warm) and the
tests all take their ports from `free_port`.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


def home() -> Path:
    return Path(os.environ.get("RNNTUNE_HOME", Path.home() / ".rnntune")).expanduser()


# Ports handed out here lie above Ray's worker ports (10002-19999) and below the kernel's
# ephemeral range (ip_local_port_range, 32768-60999 by default), where every bind to port 0 and
# Ray's own random picks land. So a port chosen here and bound a moment later by the server it
# was chosen for cannot be taken meanwhile by another process's port-0 bind (another test
# worker's Ray, say). A claim file keeps two of our processes from choosing the same one.
OWN_PORTS = (20000, 32768)
PORT_CLAIMS = Path(tempfile.gettempdir()) / "rnntune-ports"
CLAIM_LIFETIME_S = 600.0  # by then the server bound it, or it never will
_random = random.SystemRandom()  # not `random`: test plugins seed it alike in every worker


def free_port() -> int:
    """A loopback port free now, claimed for this caller for `CLAIM_LIFETIME_S`."""
    low, high = OWN_PORTS
    ephemeral = _ephemeral_low()
    if ephemeral is not None:
        high = min(high, ephemeral)
    for _ in range(100 if high - low > 100 else 0):
        port = _random.randrange(low, high)
        if _claim(port) and _bindable(port):
            return port
    with socket.socket() as s:  # no room below the ephemeral range: the kernel's choice
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _claim(port: int) -> bool:
    """Creates the port's claim file (atomically: of two processes, one wins), replacing a stale
    one; False when another live claim holds it."""
    claim = PORT_CLAIMS / str(port)
    try:
        PORT_CLAIMS.mkdir(exist_ok=True)
        if time.time() - claim.stat().st_mtime < CLAIM_LIFETIME_S:
            return False
        claim.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    except OSError:
        return True  # no place for claims: the bind check alone
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return True
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def started(pid: int) -> float:
    """When process `pid` started, to tell it from a later process with a recycled pid: its
    start in clock ticks after boot (/proc/PID/stat). psutil's `create_time` adds the boot time,
    which it derives from the wall clock and which moved by 30 s between two reads here once
    the clock was stepped. Elsewhere, `create_time`. Raises psutil.NoSuchProcess."""
    import psutil

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return float(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return psutil.Process(pid).create_time()


def still_running(pid: int, since: float) -> bool:
    """Whether `pid` is still the process that started at `since` (`started`)."""
    import psutil

    try:
        return started(pid) == since
    except psutil.Error:
        return False
