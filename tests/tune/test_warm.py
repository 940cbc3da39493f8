"""The warm Ray `rnntune run` keeps between runs (tune/warm.py): the next run's trial takes a
worker started before it, a killed driver leaves none of its workers, and the warm Ray goes
away after its idle time or on `rnntune down`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from tune import warm
from tune.compat import tune_actor_env_vars

RNNTUNE = str(Path(sys.executable).parent / "rnntune")


def test_the_key_follows_environment_and_code_not_the_terminal(monkeypatch, tmp_path):
    before = warm.key()
    monkeypatch.setenv("COLUMNS", "77")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")
    assert warm.key() == before  # a terminal's own variables
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert warm.key() != before  # workers inherit the head's environment
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setattr(warm, "_code_stamp", lambda: "edited")
    assert warm.key() != before  # workers load the trial code once
    monkeypatch.setenv(warm.IDLE_ENV, "soon")
    with pytest.raises(ValueError, match="RNNTUNE_WARM_RAY_S: expected seconds"):
        warm.idle_seconds()


def _env(tmp_path: Path, idle_s: int) -> dict[str, str]:
    """A user's environment: Ray's default token auth (no RAY_AUTH_MODE, which other tests of
    this process set to disabled), and a home of the test's own (no ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return env | {
        "HOME": str(tmp_path),
        "RNNTUNE_HOME": str(tmp_path / "home"),
        warm.IDLE_ENV: str(idle_s),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _spec(tmp_path: Path, name: str, epochs: int, trials: int = 1) -> Path:
    spec = {
        "name": name,
        "data": {"name": "digits"},
        "model": {"cell_type": "gru", "hidden_size": 16},
        "search_space": {"lr": {"grid": [0.01 * (1 + i) for i in range(trials)]}},
        "search": {"algorithm": "grid", "num_samples": 1},
        "scheduler": {"name": "fifo"},
        "budget": {"max_epochs": epochs},
        "trainer": {"diagnostics": False},
        "storage": {"url": str(tmp_path / name)},
        "registry": {"enabled": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


FIRST_DRIVER = (
    "import ray; from tune import warm; head = warm.connect(1); "
    "ray.init(address=head.address, log_to_driver=False); "
    "print(head.address, ray.cluster_resources()['CPU'])"
)


def _state(env: dict[str, str]) -> warm.WarmRay | None:
    states = list((Path(env["RNNTUNE_HOME"]) / "warm").glob("*/state.json"))
    assert len(states) <= 1, states
    return warm.WarmRay(**json.loads(states[0].read_text())) if states else None


def _unbound_workers(head: warm.WarmRay, env: dict[str, str]) -> set[int]:
    """Idle workers bound to no job that Tune's trial actors can take."""
    keeper = psutil.Process(head.keeper)
    actor_env = tune_actor_env_vars(env)
    return {p.pid for p in keeper.children(recursive=True) if warm._unbound_worker(p, actor_env)}


def _workers_of_no_job(head: warm.WarmRay) -> set[int]:
    found = set()
    for p in psutil.Process(head.keeper).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.environ().get("RAY_JOB_ID") == warm.NIL_JOB:
                found.add(p.pid)
    return found


def _at_least(found: set[int], n: int) -> set[int] | None:
    return found if len(found) >= n else None


def _trial_pids(storage: Path, trials: int) -> set[int] | None:
    """The pids of the trials' workers, once each of the `trials` has reported an epoch."""
    results = list(storage.glob("*/*/result.json"))
    lines = [r.read_text().splitlines() for r in results]
    if len(results) < trials or not all(lines):
        return None
    return {json.loads(x[-1])["pid"] for x in lines}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return value


def _gone(head: warm.WarmRay) -> bool:
    return not head.alive() and not any(
        head.temp_dir in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
    )


@pytest.mark.slow  # two searches on one warm Ray
def test_the_next_run_trains_on_a_worker_started_before_it_and_dies_with_its_driver(tmp_path):
    """A run's trials take the idle workers the keeper started after an earlier driver (none
    of Ray's own prestarted workers, which no trial can take, holds a CPU's worth of imports);
    the run SIGKILLed, those workers end with it and the warm Ray stays, until `rnntune down`."""
    env = _env(tmp_path, idle_s=600)
    # a first driver (`python -m tune`'s interpreter, not `rnntune`'s: one warm Ray for both)
    first = subprocess.run([sys.executable, "-c", FIRST_DRIVER], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert "kept warm for the next runs (10 min unused" in first.stderr, first.stderr
    head = _state(env)
    assert head is not None and head.alive()  # the warm Ray outlived its first driver
    proc = None
    try:
        # between runs the keeper starts idle workers bound to no job, with torch imported
        cpus = os.cpu_count() or 1
        ready = _wait(lambda: _at_least(_unbound_workers(head, env), cpus), 60, "no idle workers")
        assert _workers_of_no_job(head) <= _unbound_workers(head, env)  # none a trial can't use
        trials = min(2, cpus)
        proc = subprocess.Popen(
            [RNNTUNE, "run", str(_spec(tmp_path, "killed", 200, trials))],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pids = _wait(lambda: _trial_pids(tmp_path / "killed", trials), 180, "no trials reported")
        assert _state(env).keeper == head.keeper  # the same warm Ray
        assert len(list((tmp_path / "home" / "warm").iterdir())) == 1
        assert pids <= ready and len(pids) == trials  # workers started before this run
        workers = [psutil.Process(pid) for pid in pids]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "the killed job's trial workers outlived it"
        assert head.alive()  # the warm Ray stays for the next run
        _wait(lambda: not list(Path(env["RNNTUNE_HOME"]).glob("warm/*/leases/*")), 10, "lease")
        down = subprocess.run([RNNTUNE, "down"], env=env, capture_output=True, text=True)
        assert down.returncode == 0 and "stopped 1 warm Ray of `rnntune run`" in down.stdout
        _wait(lambda: _gone(head), 30, "`rnntune down` left the warm Ray running")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if head.alive():
            with contextlib.suppress(psutil.Error):
                psutil.Process(head.keeper).terminate()


@pytest.mark.slow  # a Ray head started and stopped
def test_the_warm_ray_stops_itself_after_its_idle_time(tmp_path):
    """A process that used it has exited: after `RNNTUNE_WARM_RAY_S` idle seconds the keeper
    stops the head; nothing under its temp dir is left and its state is gone. The head runs with
    Ray's token auth and a token of its own, which a driver presents."""
    env = _env(tmp_path, idle_s=3)
    used = subprocess.run(
        [sys.executable, "-c", FIRST_DRIVER], env=env, capture_output=True, text=True, timeout=120
    )
    assert used.returncode == 0 and used.stdout.startswith("127.0.0.1:"), used.stderr[-2000:]
    head = _state(env)
    assert head is not None and head.token_file is not None
    assert Path(head.token_file).stat().st_mode & 0o077 == 0  # this user's only
    assert not (tmp_path / ".ray" / "auth_token").exists()  # not Ray's shared default token
    try:
        _wait(lambda: _gone(head), 60, "the warm Ray outlived its idle time")
        assert _state(env) is None
    finally:
        if head.alive():
            with contextlib.suppress(psutil.Error):
                psutil.Process(head.keeper).terminate()


@pytest.mark.slow  # a Ray head started and its keeper killed
def test_a_killed_keeper_takes_its_head_with_it(tmp_path):
    """The keeper SIGKILLed (OOM killer, `kill -9`): its `ray start` gets SIGTERM from the
    kernel (parent-death signal) and stops every Ray process it started."""
    env = _env(tmp_path, idle_s=600)
    used = subprocess.run(
        [sys.executable, "-c", "from tune import warm; print(warm.connect(1).address)"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr[-2000:]
    head = _state(env)
    assert head is not None and head.alive()
    os.kill(head.keeper, signal.SIGKILL)
    _wait(lambda: _gone(head), 60, "the head outlived its killed keeper")
