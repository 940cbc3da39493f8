"""`rnntune` commands that talk to the job service (submit, status, logs, cancel) or start the
local stack it runs in (up, down)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from service.client import ServiceClient, ServiceUnreachable
from service.stack import down as stop_stack
from service.stack import load_stack
from service.stack import up as start_stack
from service.store import SUCCEEDED, TERMINAL
from tune.outcome import BUDGET_STOPPED, COMPLETED, EARLY_STOPPED, EXIT_CODE, FAILED_ENDS

T = TypeVar("T")


def up(
    num_cpus: Annotated[
        int | None, typer.Option(help="CPUs the Ray head offers  [default: all of them]")
    ] = None,
    allow_path: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATH",
            help="a folder or URL prefix jobs may read data from (repeatable); everything else "
            "is refused by the service and by the job drivers  [default: the current folder]",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="a PostgreSQL server (postgresql://USER:PASSWORD@HOST:PORT/) for the job "
            "store, MLflow and MLflow's users; its databases rnntune, mlflow and mlflow_auth "
            "are created when missing  [default: SQLite files in the stack's folder]",
        ),
    ] = None,
) -> int:
    """Start Ray, MLflow and the job service on loopback; print their addresses and the token."""
    print("starting a Ray head, an MLflow server and the job service on 127.0.0.1 ...")
    stack = start_stack(num_cpus, allow_path, database_url)
    print(f"job service  {stack.url}  (API docs {stack.url}/docs)")
    print(f"Ray          {stack.ray_address}  (dashboard)")
    print(f"MLflow       {stack.tracking_uri}")
    if stack.mlflow_reader:
        user, password = stack.mlflow_reader
        print(f"MLflow login {user} / {password}  (read-only; jobs write as the stack's admin)")
    print(f"token        {stack.token}")
    print(f"data from    {', '.join(stack.allowed_url_prefixes)} (more with --allow-path)")
    print(f"state        {stack.dir} (stop everything with `rnntune down`)")
    return 0


def down() -> int:
    """Stop what `rnntune up` started, and the warm Ray `rnntune run` keeps between runs."""
    from tune.warm import stop_all

    n = stop_stack()
    print(f"stopped {n} processes" if n else "no local stack is running")
    if warm := stop_all():
        print(f"stopped {warm} warm Ray{'s' if warm > 1 else ''} of `rnntune run`")
    return 0


def submit(
    spec: Annotated[str, typer.Argument(help="the job spec, YAML or JSON")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream its log until it ends")
    ] = False,
) -> int:
    """Submit a job spec to the job service."""
    client = ServiceClient.configured()
    job = client.submit(spec)
    print(f"submitted {job['id']} ({job['status']})")
    if not follow:
        print(f"follow it with `rnntune logs {job['id']} -f` or `rnntune status {job['id']}`")
        return 0
    return _follow(client, job["id"])


RECONNECT_FOR_S = 600.0  # how long following a job keeps trying to reach a restarting service


def _follow(client: ServiceClient, job_id: str) -> int:
    """Streams the job's log to its end, then its details and the driver's verdict."""
    log = _LogPrinter(client, job_id)
    job = _reconnecting(lambda: (log.run(), _final(client, job_id))[1])
    print(_details(job))
    if job.get("outcome") in EXIT_CODE:  # the driver's verdict, as `rnntune run` would exit
        return EXIT_CODE[job["outcome"]]
    return 0 if job["status"] == SUCCEEDED else 1


def _final(client: ServiceClient, job_id: str) -> dict:
    job = client.job(job_id)
    while job["status"] not in TERMINAL:  # the log stream can end just before Ray's status
        time.sleep(1)
        job = client.job(job_id)
    return job


def _reconnecting(step: Callable[[], T]) -> T:
    """`step()`, again every 2 s while the service cannot be reached (a restart), for up to
    RECONNECT_FOR_S; says once that it lost the service and once that it is back."""
    lost_at = None
    while True:
        try:
            result = step()
        except ServiceUnreachable as e:
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
                print(f"\nrnntune: {e}; reconnecting ...", file=sys.stderr, flush=True)
            if now - lost_at > RECONNECT_FOR_S:
                raise ServiceUnreachable(f"{e} (for {RECONNECT_FOR_S:.0f} s; gave up)") from None
            time.sleep(2)
            continue
        if lost_at is not None:
            print("rnntune: reconnected", file=sys.stderr)
        return result


class _LogPrinter:
    """Prints a job's log once: each reconnection streams it from its start again, and what was
    printed already is skipped."""

    def __init__(self, client: ServiceClient, job_id: str) -> None:
        self.client, self.job_id, self.printed = client, job_id, 0

    def run(self) -> None:
        seen = 0
        for chunk in self.client.follow(self.job_id):
            new = chunk[max(0, self.printed - seen) :]
            seen += len(chunk)
            if new:
                sys.stdout.write(new)
                sys.stdout.flush()
                self.printed += len(new)


def status(
    job_id: Annotated[
        str | None, typer.Argument(help="one job  [default: a table of yours]")
    ] = None,
    state: Annotated[
        str | None,
        typer.Option("--status", help="list only jobs in this state  [default: every state]"),
    ] = None,
) -> int:
    """A job's status, or a table of your jobs."""
    client = ServiceClient.configured()
    if job_id:
        print(_details(client.job(job_id)))
        return 0
    page = client.jobs(state)
    print(f"{'job':<40} {'status':<10} {'trials r/ok/es/fail':<19} {'best':>8}  created")
    for j in page["items"]:
        t = j["trials"]
        failed = sum(t.get(k, 0) for k in FAILED_ENDS)
        stopped = t.get(EARLY_STOPPED, 0) + t.get(BUDGET_STOPPED, 0)
        trials = f"{t.get('running', 0)}/{t.get(COMPLETED, 0)}/{stopped}/{failed}"
        best = f"{j['best_metric']:.4f}" if j["best_metric"] is not None else "-"
        print(f"{j['id']:<40} {j['status']:<10} {trials:<19} {best:>8}  {j['created_at'][:19]}")
    if page["total"] > len(page["items"]):
        print(f"({len(page['items'])} of {page['total']} shown)")
    return 0


def _details(j: dict) -> str:
    lines = [f"job      {j['id']} ({j['name']}, owner {j['owner']})", f"status   {j['status']}"]
    if j.get("message"):
        lines.append(f"message  {j['message']}")
    if j["trials"]:
        lines.append("trials   " + ", ".join(f"{v} {k}" for k, v in j["trials"].items() if v))
    if j.get("outcome"):
        lines.append(f"outcome  {j['outcome'].replace('_', ' ')}")
    if j.get("cause"):
        lines.append(f"cause    {j['cause']}")
    if j["best_metric"] is not None:
        lines.append(f"best     {j['metric']} = {j['best_metric']:.4f}")
    if j.get("champion_decision"):
        lines.append(f"champion {j['champion_decision']}")
    if j.get("mlflow_url"):
        lines.append(f"MLflow   {j['mlflow_url']}")
    return "\n".join(lines)


def logs(
    job_id: Annotated[str, typer.Argument(help="the job")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream until it ends")] = False,
    tail: Annotated[int, typer.Option(help="the last N lines (0: all)")] = 200,
) -> int:
    """A job's driver log."""
    client = ServiceClient.configured()
    if follow:
        _reconnecting(_LogPrinter(client, job_id).run)
        return 0
    sys.stdout.write(client.logs(job_id, tail))
    return 0


def cancel(job_id: Annotated[str, typer.Argument(help="the job")]) -> int:
    """Stop a job."""
    job = ServiceClient.configured().cancel(job_id)
    print(
        f"{job['id']}: {job['status']}" + (" (stopping)" if job["status"] not in TERMINAL else "")
    )
    return 0


def service_configured() -> bool:
    return bool(os.environ.get("RNNTUNE_URL")) or load_stack() is not None


def print_models(models: list[dict]) -> None:
    """One row per version: aliases, the registry metric and its test value, the job."""
    print(f"{'model':<24} {'version':>7} {'aliases':<22} {'metric':<10} {'value':>8} job")
    for m in models:
        for v in m["versions"]:
            tags = v["metrics"]
            metric = tags.get("metric", "")
            print(
                f"{m['name']:<24} {v['version']:>7} {','.join(v['aliases']):<22} {metric:<10} "
                f"{tags.get(metric, ''):>8} {tags.get('job_id', '')}"
            )
