"""Starting and stopping the real servers the tests talk to."""

from __future__ import annotations

from pathlib import Path


def wait_http(url: str, timeout: float = 60.0, proc=None) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before {url} answered"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop_process(proc, timeout: float = 15.0) -> None:
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_mlflow_server(root: Path, port: int):
    """A real `mlflow server` on SQLite under `root` with proxied artifacts, on a loopback port,
    answering; started again on the same root and port, it serves the same runs."""
    from service.stack import start_mlflow, stop, wait_ready

    server = start_mlflow(root, port)
    try:
        wait_ready(server, "/health", timeout=90)
    except BaseException:
        stop(server)
        raise
    return server
