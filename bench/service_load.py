"""The job service under load, on PostgreSQL: many clients at once, mixed reads and refusals.

A real stack on loopback: `rnntune up --database-url` (Ray head, MLflow, the stack's service,
all on one PostgreSQL this script starts), plus the service measured here: one uvicorn process
with its job store on that PostgreSQL, a quota of one active job per user, and one job that
can never start (its driver asks for a GPU) holding that slot. `--clients` threads (32) then
call it for `--seconds` (60), each in a loop picking:

    45%  GET /jobs                 the job list (newest first, a page of 20)
    30%  GET /jobs/{id}            one job, refreshed from Ray (and MLflow) within the timeout
    10%  GET /jobs/{id}/logs       its driver's log, from Ray
    15%  POST /jobs                a submission, refused by the quota (403)

Requests per second, p50 / p99 latency per kind and overall, and the count of 5xx answers go
to bench/results/service_load.json and a table. The clients run on the same 2 cores as the
service, Ray and PostgreSQL: the figures are a floor for a dedicated machine.

    .venv/bin/python bench/service_load.py                 # ~2 min on 2 cores
    .venv/bin/python bench/service_load.py --smoke-test    # 8 clients, 10 s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.auth import hash_token  # noqa: E402
from service.stack import (  # noqa: E402
    RAY_LOCAL_ENV,
    load_stack,
    service_env,
    start_service,
    stop,
    wait_ready,
)
from tests.support.postgres import start_postgres  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RNNTUNE = str(Path(sys.executable).parent / "rnntune")
MIX = [("list", 45), ("get", 30), ("logs", 10), ("submit", 15)]
TOKEN = "load-token-1"
JOB = {
    "name": "load",
    "data": {"name": "mnist1d", "limit": 600},
    "model": {"cell_type": "gru", "hidden_size": 16},
    "search_space": {},
    "search": {"num_samples": 1},
    "resources": {"driver_gpus": 1},  # never schedulable here: holds the user's one slot
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


def drive(url: str, job_id: str, seconds: float, clients: int) -> dict[str, list]:
    """`clients` threads for `seconds`; per kind, (latency s, status code) of every request."""
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    out: dict[str, list] = {k: [] for k in kinds}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        mine: dict[str, list] = {k: [] for k in kinds}
        while time.monotonic() < stop_at:
            kind = rng.choices(kinds, weights)[0]
            start = time.monotonic()
            try:
                if kind == "list":
                    r = session.get(f"{url}/jobs?limit=20", timeout=60)
                elif kind == "get":
                    r = session.get(f"{url}/jobs/{job_id}", timeout=60)
                elif kind == "logs":
                    r = session.get(f"{url}/jobs/{job_id}/logs", timeout=60)
                else:
                    r = session.post(f"{url}/jobs", json=JOB, timeout=60)
                code = r.status_code
            except requests.RequestException:
                code = 0  # no answer at all
            mine[kind].append((time.monotonic() - start, code))
        with lock:
            for k, v in mine.items():
                out[k].extend(v)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def summarize(samples: dict[str, list], seconds: float) -> dict:
    rows = {}
    everything = [s for v in samples.values() for s in v]
    for kind, values in [*samples.items(), ("all", everything)]:
        latencies = [t for t, _ in values]
        codes: dict[str, int] = {}
        for _, c in values:
            codes[str(c)] = codes.get(str(c), 0) + 1
        rows[kind] = {
            "requests": len(values),
            "per_s": len(values) / seconds,
            "p50_ms": 1000 * percentile(latencies, 0.50),
            "p99_ms": 1000 * percentile(latencies, 0.99),
            "mean_ms": 1000 * statistics.fmean(latencies) if latencies else 0.0,
            "server_errors": sum(1 for _, c in values if c >= 500 or c == 0),
            "codes": codes,
        }
    return rows


def table(rows: dict) -> str:
    head = ("request", "count", "per s", "p50 ms", "p99 ms", "5xx", "codes")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for kind, r in rows.items():
        cells = (kind, r["requests"], f"{r['per_s']:.1f}", f"{r['p50_ms']:.0f}")
        cells += (f"{r['p99_ms']:.0f}", r["server_errors"], r["codes"])
        lines.append(" | ".join(str(c) for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=RESULTS / "service_load.json")
    p.add_argument("--smoke-test", action="store_true", help="8 clients for 10 s")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.clients, args.seconds = 8, 10.0
    os.environ.update(RAY_LOCAL_ENV)
    work = Path(tempfile.mkdtemp(prefix="rnntune-load-"))
    pg = start_postgres()
    env = {**os.environ, "RNNTUNE_HOME": str(work / "home")}
    service = None
    try:
        up = [RNNTUNE, "up", "--num-cpus", "2", "--allow-path", str(work)]
        started = subprocess.run(
            [*up, "--database-url", pg.url()], env=env, capture_output=True, text=True
        )
        if started.returncode != 0:
            raise SystemExit(f"rnntune up failed: {started.stderr.strip()[-500:]}")
        os.environ["RNNTUNE_HOME"] = env["RNNTUNE_HOME"]
        stack = load_stack()
        tokens = work / "tokens.json"
        tokens.write_text(
            json.dumps([{"user": "load", "role": "user", "sha256": hash_token(TOKEN)}])
        )
        settings = service_env(
            work, stack.ray_address, stack.tracking_uri, tokens, stack.ray_token,
            database_url=pg.create_database("load"),
        )  # fmt: skip
        settings |= stack.mlflow_auth.client_env() if stack.mlflow_auth else {}
        settings |= {
            "RNNTUNE_STORAGE_URL": str(Path(stack.dir) / "storage"),
            "RNNTUNE_MAX_CONCURRENT_JOBS": "1",
            "RNNTUNE_MAX_DRIVER_GPUS": "1",
        }
        service = start_service(work / "logs", settings)
        wait_ready(service, "/healthz")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        first = requests.post(f"{service.url}/jobs", json=JOB, headers=headers, timeout=60)
        first.raise_for_status()
        job_id = first.json()["id"]
        print(f"{args.clients} clients for {args.seconds:.0f} s against {service.url} ...")
        samples = drive(service.url, job_id, args.seconds, args.clients)
        rows = summarize(samples, args.seconds)
        requests.delete(f"{service.url}/jobs/{job_id}", headers=headers, timeout=60)
    finally:
        if service is not None:
            stop(service)
        subprocess.run([RNNTUNE, "down"], env=env, capture_output=True, timeout=120)
        pg.remove()
    result = {"clients": args.clients, "seconds": args.seconds, "database": "postgresql"}
    result |= {"mix": dict(MIX), "requests": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
