"""CLI commands that talk to the job service (`submit`, `status`, `logs`, `cancel`, ...) or start it."""

from __future__ import annotations

import os
import sys
import time

from service.client import ServiceClient
from service.stack import down, load_stack, up

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def cmd_up(num_cpus: int | None, allow_paths: list[str] | None = None) -> int:
    """Start Ray, MLflow and the job service on loopback; print their addresses and the token."""
    print("starting a Ray head, an MLflow server and the job service on 127.0.0.1 ...")
    stack = up(num_cpus, allow_paths)
    print(f"job service  {stack.url}  (API docs {stack.url}/docs)")
    print(f"Ray          {stack.ray_address}  (dashboard)")
    print(f"MLflow       {stack.tracking_uri}")
    print(f"token        {stack.token}")
    print(f"data from    {', '.join(stack.allowed_url_prefixes)} (more with --allow-path)")
    print(f"state        {stack.dir} (stop everything with `rnntune down`)")
    return 0


def cmd_down() -> int:
    n = down()
    print(f"stopped {n} processes" if n else "no local stack is running")
    return 0


def cmd_submit(spec_path: str, follow: bool) -> int:
    client = ServiceClient.configured()
    job = client.submit(spec_path)
    print(f"submitted {job['id']} ({job['status']})")
    if not follow:
        print(f"follow it with `rnntune logs {job['id']} -f` or `rnntune status {job['id']}`")
        return 0
    return _follow(client, job["id"])


def _follow(client: ServiceClient, job_id: str) -> int:
    for chunk in client.follow(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    job = client.job(job_id)
    while job["status"] not in TERMINAL:  # the log stream can end just before Ray's status does
        time.sleep(1)
        job = client.job(job_id)
    print(_details(job))
    return 0 if job["status"] == "SUCCEEDED" else 1


def cmd_status(job_id: str | None, status: str | None) -> int:
    client = ServiceClient.configured()
    if job_id:
        print(_details(client.job(job_id)))
        return 0
    page = client.jobs(status)
    print(f"{'job':<40} {'status':<10} {'trials d/r/s/f':<15} {'best':>8}  created")
    for j in page["items"]:
        t = j["trials"]
        trials = "/".join(str(t.get(k, 0)) for k in ("done", "running", "stopped", "failed"))
        best = f"{j['best_metric']:.4f}" if j["best_metric"] is not None else "-"
        print(f"{j['id']:<40} {j['status']:<10} {trials:<15} {best:>8}  {j['created_at'][:19]}")
    if page["total"] > len(page["items"]):
        print(f"({len(page['items'])} of {page['total']} shown)")
    return 0


def _details(j: dict) -> str:
    lines = [f"job      {j['id']} ({j['name']}, owner {j['owner']})", f"status   {j['status']}"]
    if j.get("message"):
        lines.append(f"message  {j['message']}")
    if j["trials"]:
        lines.append("trials   " + ", ".join(f"{v} {k}" for k, v in j["trials"].items()))
    if j["best_metric"] is not None:
        lines.append(f"best     {j['metric']} = {j['best_metric']:.4f}")
    if j.get("champion_decision"):
        lines.append(f"champion {j['champion_decision']}")
    if j.get("mlflow_url"):
        lines.append(f"MLflow   {j['mlflow_url']}")
    return "\n".join(lines)


def cmd_logs(job_id: str, follow: bool, tail: int) -> int:
    client = ServiceClient.configured()
    if follow:
        for chunk in client.follow(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()
        return 0
    sys.stdout.write(client.logs(job_id, tail))
    return 0


def cmd_cancel(job_id: str) -> int:
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
