"""A warm local Ray that outlives `rnntune run`, so that the next run skips Ray's start and its
trials skip the ~4 s of worker start and torch/Lightning imports (bench/fixed_cost.py).

`rnntune run` without RAY_ADDRESS connects to the warm Ray of its environment, or starts one:
`ray start --head --block` on loopback under a detached keeper (`python -m tune.warm`). Its
workers preload torch, Lightning and the trial code; the keeper keeps as many idle workers,
bound to no job yet, as the machine has CPUs, so a job's trial actors take a worker whose
imports are done. Ray ends a job's own workers when its driver exits or dies. Once no job has
used it for `RNNTUNE_WARM_RAY_S` seconds the keeper stops it. `rnntune down` stops it too.
`RNNTUNE_WARM_RAY_S=0` turns it off: each run then starts and ends its own embedded Ray.

The head runs with Ray's token authentication, as Ray's own local clusters do, with a token of
its own: a new random one in a file only this user can read (`token` beside its state), which
its drivers and workers present. `RAY_AUTH_MODE=disabled` in the environment is respected.

One warm Ray per environment: Ray's workers inherit the head's environment, not the driver's,
and load the trial code once. So the key hashes the Python, the working folder, the
environment variables (less a terminal's own, listed in VOLATILE) and the code's files: a run
in another environment, or after an edit, gets a warm Ray of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from tune.local import LOOPBACK, free_port, home, started, still_running

IDLE_ENV = "RNNTUNE_WARM_RAY_S"
DEFAULT_IDLE_S = 600.0
START_TIMEOUT_S = 60.0
PRELOAD = ("torch", "pytorch_lightning", "tune.trainable")  # what a trial's worker imports
CODE = ("tune", "lightning_modules", "deploy")  # the packages a worker loads
VOLATILE = {"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "PYTEST_CURRENT_TEST"}
VOLATILE_PREFIXES = ("TERM", "COLORTERM", "SSH_", "TMUX", "XDG_", "DISPLAY", "WINDOWID", "PS1")
NIL_JOB = "ffffffff"  # RAY_JOB_ID of a worker started for no job
POLL_S = 1.0
PRESTART_EVERY_S = 3.0  # a top-up's workers count from their spawn, while they still import


@dataclass
class WarmRay:
    address: str  # the GCS, host:port
    node_manager: str  # the raylet's gRPC server, host:port (worker prestart)
    keeper: int
    keeper_started: float  # tune.local.started: tells the keeper from a recycled pid
    temp_dir: str
    token_file: str | None = None  # Ray's token auth; None: RAY_AUTH_MODE=disabled was asked for

    def alive(self) -> bool:
        return still_running(self.keeper, self.keeper_started)


def idle_seconds() -> float:
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    except ValueError:
        raise ValueError(f"{IDLE_ENV}: expected seconds (0: no warm Ray)") from None


def key() -> str:
    """This environment's warm Ray: Python, working folder, environment, and the code's files."""
    env = sorted(
        (k, v)
        for k, v in os.environ.items()
        if k not in VOLATILE and not k.startswith(VOLATILE_PREFIXES)
    )
    digest = hashlib.sha256()
    # The Python by its environment, not its path: `rnntune` (python3) and `python -m tune`
    # (python) of one virtualenv share a warm Ray.
    python = f"{sys.prefix}:{sys.version}"
    for part in (python, os.getcwd(), json.dumps(env), _code_stamp()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _code_stamp() -> str:
    root = Path(__file__).resolve().parents[1]
    files = []
    for package in CODE:
        for path in sorted((root / package).rglob("*.py")):
            stat = path.stat()
            files.append(f"{path.relative_to(root)}:{stat.st_mtime_ns}:{stat.st_size}")
    return "\n".join(files)


def connect(trials: int | None = None) -> WarmRay | None:
    """The warm Ray of this environment, started when there is none; None when turned off.
    This process holds a lease on it until it exits (the keeper's idle clock waits). `trials`:
    the first job's trials, when known: a new warm Ray prestarts no more workers than that for
    it (each one's imports take CPU from the driver's start), one per CPU after it."""
    if idle_seconds() <= 0:
        return None
    where = home() / "warm" / key()
    where.mkdir(parents=True, exist_ok=True)
    with _locked(where / "lock"):
        warm = _read(where)
        if warm is None or not warm.alive():
            warm = _start(where, min(_cpus(), trials or _cpus()))
            idle = idle_seconds()
            kept = f"{idle / 60:.0f} min" if idle >= 60 else f"{idle:.0f} s"
            print(
                f"rnntune: a local Ray is kept warm for the next runs ({kept} unused, "
                f"{IDLE_ENV}; `rnntune down` stops it)",
                file=sys.stderr,
            )
        _lease(where)
    if warm.token_file is not None:
        from tune.compat import use_ray_token

        use_ray_token(warm.token_file)  # before this process's ray.init
    return warm


def _read(where: Path) -> WarmRay | None:
    try:
        return WarmRay(**json.loads((where / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lease(where: Path) -> None:
    leases = where / "leases"
    leases.mkdir(exist_ok=True)
    lease = leases / f"{os.getpid()}-{started(os.getpid())}"
    lease.touch()
    atexit.register(lease.unlink, missing_ok=True)


def _cpus() -> int:
    return os.cpu_count() or 1


def _start(where: Path, first_workers: int) -> WarmRay:
    (where / "state.json").unlink(missing_ok=True)
    log = open(where / "keeper.log", "ab")  # noqa: SIM115 - the keeper's, kept open by it
    with log:
        keeper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tune.warm",
                str(where),
                str(idle_seconds()),
                str(first_workers),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # neither a Ctrl-C nor the driver's end reaches it
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        warm = _read(where)
        if warm is not None and warm.keeper == keeper.pid:
            return warm
        if keeper.poll() is not None:
            break
        time.sleep(0.1)
    keeper.kill()
    tail = (where / "keeper.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the warm Ray did not start; see {where / 'keeper.log'}:\n{tail}")


# --- the keeper: `python -m tune.warm FOLDER IDLE_S` ------------------------------------------


def keep(where: Path, idle_s: float, first_workers: int) -> None:
    """Starts the head with `first_workers` idle workers, says where it is (state.json), tops
    up its idle workers while no job runs, and stops it after `idle_s` seconds without a job (or
    on SIGTERM)."""
    from tune.watchdog import end_processes

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    temp_dir = tempfile.mkdtemp(prefix="rnt-warm-")  # short: Ray's socket paths live in it
    gcs, node_manager = free_port(), free_port()
    token_file = _new_token(where)  # in this process's environment: the head, its workers, top-up
    head = _start_head(temp_dir, gcs, node_manager)
    warm = None
    try:
        _wait_for_ports(head, gcs, node_manager)
        me = os.getpid()
        warm = WarmRay(
            f"{LOOPBACK}:{gcs}", f"{LOOPBACK}:{node_manager}", me, started(me), temp_dir, token_file
        )
        state = where / "state.json"
        state.with_suffix(".tmp").write_text(json.dumps(asdict(warm)))
        state.with_suffix(".tmp").replace(state)
        _watch(where, head, warm, idle_s, first_workers)
    finally:
        # The head goes whatever happens to the folder (a temporary RNNTUNE_HOME removed under
        # it once left a head running with no keeper).
        with contextlib.suppress(OSError), _locked(where / "lock"):
            said = _read(where)
            if said is not None and said.keeper == os.getpid():
                (where / "state.json").unlink(missing_ok=True)
        end_processes([p for p in (_process(head.pid), *_tree(head.pid)) if p is not None], 10.0)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _new_token(where: Path) -> str | None:
    """A new token for the head, in a file only this user reads, set for this process and what
    it starts; None where the environment turns Ray's token auth off (RAY_AUTH_MODE=disabled)."""
    import secrets

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    path = where / "token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as Ray's own
    from tune.compat import use_ray_token

    use_ray_token(str(path))
    return str(path)


def _start_head(temp_dir: str, gcs: int, node_manager: int) -> subprocess.Popen:
    # Ray's own prestarts (at the raylet's start, and for the first driver that connects) make
    # workers without the runtime env Tune gives its trial actors, of no use to a trial but
    # holding a CPU's worth of imports: only the keeper's (tune.compat.prestart_ray_workers).
    config = {
        "preload_python_modules": list(PRELOAD),
        "enable_worker_prestart": False,
        "prestart_worker_first_driver": False,
    }
    ray = Path(sys.executable).with_name("ray")
    argv = [str(ray), "start", "--head", "--block", "--disable-usage-stats"]
    argv += ["--temp-dir", temp_dir, "--port", str(gcs), "--node-manager-port", str(node_manager)]
    argv += ["--include-dashboard", "false", "--num-cpus", str(_cpus())]
    # One node of fixed size, its drivers started with log_to_driver=False: no autoscaler
    # monitor and no log monitor (two Python processes; the log monitor polls all the time).
    argv += ["--no-monitor", "--include-log-monitor", "false"]
    argv += ["--ray-client-server-port", str(free_port())]
    argv += ["--dashboard-agent-listen-port", str(free_port())]
    argv += ["--system-config", json.dumps(config)]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_end_with_parent)


def _end_with_parent() -> None:
    """In the head's `ray start` (before exec): SIGTERM when the keeper dies, even by SIGKILL;
    `ray start --block` then stops every Ray process it started."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _wait_for_ports(head: subprocess.Popen, *ports: int) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT_S
    for port in ports:
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"`ray start` exited ({head.returncode})")
            with socket.socket() as s:
                if s.connect_ex((LOOPBACK, port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the warm Ray's port {port} did not open")
            time.sleep(0.2)


def _watch(
    where: Path, head: subprocess.Popen, warm: WarmRay, idle_s: float, first_workers: int
) -> None:
    _top_up(head.pid, warm, idle_s, first_workers)  # for the job that started it, too
    last_used = last_prestart = time.monotonic()
    while head.poll() is None:
        time.sleep(POLL_S)
        now = time.monotonic()
        if _live_leases(where / "leases"):
            last_used = now
            continue
        if now - last_used > idle_s:
            return
        if now - last_prestart > PRESTART_EVERY_S:
            last_prestart = now
            _top_up(head.pid, warm, idle_s, _cpus())


def _live_leases(leases: Path) -> int:
    live = 0
    for lease in leases.glob("*-*"):
        pid, _, since = lease.name.partition("-")
        try:
            if still_running(int(pid), float(since)):
                live += 1
                continue
        except ValueError:
            pass
        lease.unlink(missing_ok=True)  # its driver is gone (killed): Ray ended its workers
    return live


def _top_up(head_pid: int, warm: WarmRay, keep_alive_s: float, target: int) -> None:
    """Starts idle workers bound to no job until there are `target`."""
    from tune.compat import prestart_ray_workers, tune_actor_env_vars

    actor_env = tune_actor_env_vars()
    ready = sum(1 for p in _tree(head_pid) if _unbound_worker(p, actor_env))
    if ready < target:
        prestart_ray_workers(warm.node_manager, target - ready, int(keep_alive_s))


def _unbound_worker(p: psutil.Process, actor_env: dict[str, str]) -> bool:
    """A worker started for no job with the runtime env of Tune's trial actors, idle or still
    starting (an assigned one has its actor's name)."""
    try:
        env = p.environ()
        if env.get("RAY_JOB_ID") != NIL_JOB or any(env.get(k) != v for k, v in actor_env.items()):
            return False
        name = p.name()
        return name == "ray::IDLE" or not name.startswith("ray::")
    except psutil.Error:
        return False


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_all() -> int:
    """Stops every warm Ray of this home (`rnntune down`); returns how many."""
    stopped = 0
    for state in (home() / "warm").glob("*/state.json"):
        warm = _read(state.parent)
        if warm is not None and warm.alive():
            proc = psutil.Process(warm.keeper)
            proc.terminate()
            psutil.wait_procs([proc], timeout=20)
            stopped += 1
    return stopped


if __name__ == "__main__":
    keep(Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
