"""The fault matrix: real faults injected into real `rnntune run` jobs, and what each left behind.

Every fault runs a small search (digits, GRU, two trials) as its own `rnntune run` process, with
its own embedded Ray, against one real `mlflow server` this script starts on loopback; then the
job is read back from MLflow and from Tune's own result files:

    expected / observed  the job's outcome and exit code
    metrics lost         epochs a trial reported to Tune (with a finite metric) that MLflow lacks
    duplicate steps      metric points logged twice at one step
    runs left open       MLflow runs of the job still RUNNING after its driver ended
    versions             registered model versions for the job (registering faults only)

Faults:

    trial_raises        the data file is not UTF-8: every trial raises
    trial_diverges      one trial of two at Adam lr 10 (NaN losses)
    mlflow_outage       the MLflow server stopped mid-search for --outage-s (60), then restarted
    driver_killed       the driver's process group SIGKILLed after a trial finished, then resumed
    cancelled           SIGTERM to the driver mid-search (what `rnntune cancel` sends)
    storage_read_only   the storage filesystem (a tmpfs) remounted read-only mid-search [root]
    disk_full           storage and the embedded MLflow store on a 12 MiB tmpfs, 4 trials [root]
    database_restarted  `rnntune up` on PostgreSQL (job store and MLflow), a job submitted
                        with `rnntune submit --follow`; PostgreSQL stopped for --db-outage-s
                        (30) mid-search and started again

    .venv/bin/python bench/faults.py                      # ~6 min on 2 cores
    .venv/bin/python bench/faults.py --only mlflow_outage --outage-s 60

Writes bench/results/faults.json and prints the table. The [root] faults need `mount`; without
it they are reported as not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import yaml
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lightning_modules.metrics import REPORTED  # noqa: E402
from service.stack import RAY_LOCAL_ENV, free_port, start_mlflow, stop, wait_ready  # noqa: E402
from tune import outcome as O  # noqa: E402
from tune.trials import NON_FINITE  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RNNTUNE = str(Path(sys.executable).parent / "rnntune")


@dataclass
class Row:
    fault: str
    expected: str
    observed: str = "not run"
    exit_code: int | None = None
    metrics_lost: int | None = None
    duplicate_steps: int | None = None
    runs_left_open: int | None = None
    versions: int | None = None
    cause: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, work: Path, outage_s: float, db_outage_s: float = 30.0) -> None:
        self.work, self.outage_s, self.db_outage_s = work, outage_s, db_outage_s
        self.mlflow_root = work / "mlflow"
        self.mlflow_root.mkdir()
        self.port = free_port()
        self.server = self.start_mlflow()
        self.url = self.server.url
        self.client = MlflowClient(self.url)

    def start_mlflow(self):
        server = start_mlflow(self.mlflow_root, self.port)
        wait_ready(server, "/health", timeout=90)
        return server

    def spec(self, name: str, store: Path, **sections) -> Path:
        raw = {
            "name": name,
            "data": {"name": "digits"},
            "model": {"cell_type": "gru", "hidden_size": 16},
            "search_space": {"hidden_size": {"grid": [12, 16]}},
            "search": {"num_samples": 1, "max_concurrent": 2},
            "scheduler": {"name": "fifo"},
            "budget": {"max_epochs": 20},
            "trainer": {"diagnostics": False},
            "storage": {"url": str(store)},
            "tracking": {"uri": self.url, "experiment": "faults"},
            "registry": {"enabled": False},
        }
        raw.update(sections)
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def start(self, name: str, spec: Path, *argv: str) -> subprocess.Popen:
        """`rnntune run SPEC --job-id NAME`, or `rnntune ARGV...` when given."""
        log = open(self.work / f"{name}.log", "a")
        return subprocess.Popen(
            [RNNTUNE, *(argv or ("run", str(spec), "--job-id", name))],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **RAY_LOCAL_ENV},
            start_new_session=True,
        )

    def runs(self, job_id: str, client: MlflowClient | None = None):
        client = client or self.client
        exp = client.get_experiment_by_name("faults")
        if exp is None:
            return []
        return client.search_runs(
            [exp.experiment_id], f"tags.`{O.JOB_TAG}` = '{job_id}'", max_results=1000
        )

    def wait_for_epochs(self, proc, job_id: str, trials: int = 1, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            kids = [r for r in self.runs(job_id) if O.PARENT_TAG in r.data.tags]
            if sum("val_acc" in r.data.metrics for r in kids) >= trials:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{job_id}: no epoch reached MLflow within {timeout:.0f} s")

    def inject(self, row: Row, job_id: str, spec: Path, store: Path, fault, trials: int = 2) -> Row:
        """Start the job, let `trials` trials log an epoch, `fault(proc)`, wait, measure.
        `fault` returns the process whose exit code counts (a resumed driver), or None."""
        proc = self.start(job_id, spec)
        self.wait_for_epochs(proc, job_id, trials=trials)
        proc = fault(proc) or proc
        row.exit_code = proc.wait(900)
        self.measure(row, job_id, store)
        return row

    def measure(self, row: Row, job_id: str, store: Path, client=None) -> None:
        """Outcome, lost and duplicate metric points, open runs, versions: from MLflow and Tune."""
        client = client or self.client
        runs = self.runs(job_id, client)
        parents = [r for r in runs if O.PARENT_TAG not in r.data.tags]
        kids = {r.data.tags.get(O.TRIAL_TAG): r for r in runs if O.PARENT_TAG in r.data.tags}
        row.runs_left_open = sum(r.info.status == "RUNNING" for r in runs)
        if parents:
            tags = parents[0].data.tags
            row.observed = tags.get(O.OUTCOME_TAG, f"(no outcome; {parents[0].info.status})")
            row.cause = tags.get(O.CAUSE_TAG, "")[:160]
        lost = dupes = 0
        for trial_id, expected in tune_epochs(store / job_id).items():
            run = kids.get(trial_id)
            seen: dict[str, list[int]] = {}
            if run is not None:
                for key in REPORTED:
                    seen[key] = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            logged = {s for steps in seen.values() for s in steps}
            lost += len(expected - logged)
            dupes += sum(len(steps) - len(set(steps)) for steps in seen.values())
        row.metrics_lost, row.duplicate_steps = lost, dupes
        versions = client.search_model_versions(f"tags.job_id = '{job_id}'")
        row.versions = len(versions)


def tune_epochs(job_dir: Path) -> dict[str, set[int]]:
    """trial id -> epochs it reported with at least one finite metric, from Tune's result files."""
    out: dict[str, set[int]] = {}
    for path in job_dir.glob("*/result.json"):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                r = json.loads(line)
                imputed = set(str(r.get(NON_FINITE) or "").split(","))
                finite = [
                    k
                    for k in REPORTED
                    if k in r
                    and k not in imputed
                    and isinstance(r[k], int | float)
                    and math.isfinite(r[k])
                ]
                if finite:
                    out.setdefault(r["trial_id"], set()).add(int(r.get("epoch", 0)))
    return out


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int):
    path.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def can_mount(work: Path) -> bool:
    try:
        with tmpfs(work / "probe", 1):
            return True
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False


def trial_raises(b: Bench) -> Row:
    row = Row("trial_raises", O.FAILED + ", exit 1")
    bad = b.work / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 2000)
    store = b.work / "s_raises"
    spec = b.spec(
        "raises",
        store,
        data={"name": "text", "url": str(bad), "seq_len": 32},
    )
    row.exit_code = b.start("raises", spec).wait(600)
    b.measure(row, "raises", store)
    return row


def trial_diverges(b: Bench) -> Row:
    row = Row("trial_diverges", O.PARTIAL + ", exit 0")
    store = b.work / "s_diverges"
    spec = b.spec(
        "diverges",
        store,
        data={"name": "mnist1d", "limit": 600},
        model={"cell_type": "rnn_relu", "hidden_size": 16},
        search_space={"lr": {"grid": [10.0, 0.003]}},  # adam at lr 10: NaN in the first epoch
        optim={"optimizer": "adam", "batch_size": 64},
    )
    row.exit_code = b.start("diverges", spec).wait(600)
    b.measure(row, "diverges", store)
    return row


def mlflow_outage(b: Bench) -> Row:
    row = Row("mlflow_outage", f"{O.SUCCEEDED}, exit 0, {b.outage_s:.0f} s outage ridden out")
    store = b.work / "s_outage"
    epochs = int(b.outage_s * 2.5) + 20  # still training when MLflow returns
    spec = b.spec("outage", store, budget={"max_epochs": epochs})

    def outage(proc) -> None:
        stop(b.server)
        down = time.monotonic()
        time.sleep(b.outage_s)
        b.server = b.start_mlflow()
        row.notes.append(f"MLflow down {time.monotonic() - down:.0f} s (stop to answering again)")

    return b.inject(row, "outage", spec, store, outage)


def driver_killed(b: Bench) -> Row:
    row = Row("driver_killed", f"{O.SUCCEEDED} after resume, exit 0, 1 version")
    store = b.work / "s_killed"
    grid = {"hidden_size": {"grid": [8, 12, 16, 20]}}
    spec = b.spec("killed", store, search_space=grid, registry={"model_name": "faults-killed"})

    def kill_and_resume(proc):
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        row.notes.append("killed mid-search; resumed with `rnntune resume`")
        return b.start("killed", spec, "resume", "killed", "--storage", str(store))

    return b.inject(row, "killed", spec, store, kill_and_resume, trials=1)


def cancelled(b: Bench) -> Row:
    row = Row("cancelled", f"{O.STOPPED}, exit 130, no run left RUNNING")
    store = b.work / "s_cancel"
    spec = b.spec("cancel", store, budget={"max_epochs": 400})
    return b.inject(row, "cancel", spec, store, lambda proc: os.kill(proc.pid, signal.SIGTERM))


def storage_read_only(b: Bench) -> Row:
    row = Row("storage_read_only", f"{O.FAILED} or {O.PARTIAL}, trials ERROR with OSError")

    def remount_read_only(proc) -> None:
        for _ in range(50):  # EBUSY while a file is open for writing: try again
            if subprocess.run(["mount", "-o", "remount,ro", str(store)]).returncode == 0:
                return
            time.sleep(0.1)
        row.notes.append("could not remount read-only (busy)")

    with tmpfs(b.work / "ro", 256) as store:
        spec = b.spec("readonly", store, budget={"max_epochs": 200})
        return b.inject(row, "readonly", spec, store, remount_read_only)


def disk_full(b: Bench) -> Row:
    row = Row("disk_full", f"{O.FAILED}, the first cause ENOSPC, no run left RUNNING")
    with tmpfs(b.work / "full", 12) as store:
        spec = b.spec(
            "full",
            store,
            # two at a time: the later two trials' runs are created while the disk fills
            search_space={"hidden_size": {"grid": [12, 16, 20, 24]}},
            tracking={"experiment": "faults"},  # the embedded SQLite store, on the small disk
            budget={"max_epochs": 400},
            storage={"url": str(store), "keep_checkpoints": 400},
        )
        row.exit_code = b.start("full", spec).wait(900)
        b.measure(row, "full", store, MlflowClient(f"sqlite:///{store / 'mlflow.db'}"))
        row.notes.append("metrics read from the embedded store on the full disk")
    return row


def database_restarted(b: Bench) -> Row:
    """The service's PostgreSQL (which MLflow shares, as in deploy/compose.yaml) stopped under a
    running job that a client follows: reads answer within the dependency timeout (503 naming
    the job store while it is down), `/readyz` names the database, the client reconnects, and
    after the restart the job ends with its true outcome, once, every epoch in MLflow."""
    import requests

    from tests.support.postgres import start_postgres

    row = Row(
        "database_restarted",
        f"{O.SUCCEEDED}, exit 0, 1 job, reads answered in < 2 s while the database was down",
    )
    pg = start_postgres()
    home = b.work / "db-home"
    env = {**os.environ, **RAY_LOCAL_ENV, "RNNTUNE_HOME": str(home)}
    up = [RNNTUNE, "up", "--num-cpus", "2", "--allow-path", str(b.work)]
    up += ["--database-url", pg.url()]
    started = subprocess.run(up, env=env, capture_output=True, text=True, timeout=300)
    admin = contextlib.ExitStack()  # this process's MLflow client signs in as the stack's admin
    try:
        if started.returncode != 0:
            raise RuntimeError(f"rnntune up: {started.stderr.strip()[-300:]}")
        state = json.loads((home / "stack.json").read_text())
        login = state["mlflow_auth"]
        admin.enter_context(
            mock.patch.dict(
                os.environ,
                MLFLOW_TRACKING_USERNAME=login["username"],
                MLFLOW_TRACKING_PASSWORD=login["password"],
            )
        )
        client = MlflowClient(state["tracking_uri"])
        headers = {"Authorization": f"Bearer {state['token']}"}
        epochs = int(b.db_outage_s * 2.5) + 20  # still training when the database returns
        spec = b.spec("dbjob", b.work, budget={"max_epochs": epochs})
        raw = yaml.safe_load(spec.read_text())
        for key in ("storage", "tracking"):  # the service's own
            raw.pop(key)
        spec.write_text(yaml.safe_dump(raw | {"tracking": {"experiment": "faults"}}))
        log = open(b.work / "dbjob-follow.log", "w")
        follow = subprocess.Popen(
            [RNNTUNE, "submit", str(spec), "--follow"], env=env, stdout=log, stderr=log
        )
        job_id = None
        deadline = time.monotonic() + 180
        while job_id is None or not [
            r for r in b.runs(job_id, client) if "val_acc" in r.data.metrics
        ]:
            if time.monotonic() > deadline or follow.poll() is not None:
                raise TimeoutError("the job logged no epoch")
            time.sleep(1)
            items = requests.get(f"{state['url']}/jobs", headers=headers, timeout=10).json()
            job_id = next((j["id"] for j in items["items"] if j["name"] == "dbjob"), None)
        pg.stop()
        down, probes = time.monotonic(), []
        while time.monotonic() - down < b.db_outage_s:
            for path in (f"/jobs/{job_id}", "/jobs", "/readyz"):
                t = time.monotonic()
                r = requests.get(f"{state['url']}{path}", headers=headers, timeout=30)
                probes.append((path, r.status_code, time.monotonic() - t, r.text[:200]))
            time.sleep(1)
        pg.start()
        row.notes.append(f"PostgreSQL down {time.monotonic() - down:.0f} s")
        slowest = max(p[2] for p in probes)
        codes = sorted({f"{p[0].split('/')[-1] or 'jobs'}:{p[1]}" for p in probes})
        readyz = next((p[3] for p in probes if p[0] == "/readyz"), "")
        row.notes.append(f"while down: {len(probes)} reads, slowest {slowest:.2f} s, {codes}")
        row.notes.append(f"/readyz while down: {readyz}")
        row.exit_code = follow.wait(900)
        listed = requests.get(f"{state['url']}/jobs", headers=headers, timeout=30).json()
        jobs = [j for j in listed["items"] if j["name"] == "dbjob"]
        row.notes.append(f"jobs stored: {len(jobs)}; status {[j['status'] for j in jobs]}")
        b.measure(row, job_id, Path(state["dir"]) / "storage", client)
        if slowest >= 2.0 or len(jobs) != 1 or "database" not in readyz:
            row.observed += " (NOT as expected: see notes)"
    finally:
        subprocess.run([RNNTUNE, "down"], env=env, capture_output=True, timeout=120)
        pg.remove()
        admin.close()
    return row


FAULTS: dict[str, Callable[[Bench], Row]] = {
    f.__name__: f
    for f in (
        trial_raises,
        trial_diverges,
        mlflow_outage,
        driver_killed,
        cancelled,
        storage_read_only,
        disk_full,
        database_restarted,
    )
}
NEEDS_MOUNT = {"storage_read_only", "disk_full"}


def table(rows: list[Row]) -> str:
    head = ("fault", "expected", "observed", "exit", "lost", "dup", "open", "versions", "s")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        cells = (r.fault, r.expected, r.observed, r.exit_code, r.metrics_lost, r.duplicate_steps)
        cells += (r.runs_left_open, r.versions, f"{r.seconds:.0f}")
        lines.append(" | ".join("-" if c is None else str(c) for c in cells))
    for r in rows:
        for note in ([f"cause: {r.cause}"] if r.cause else []) + r.notes:
            lines.append(f"  {r.fault}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", choices=sorted(FAULTS), help="run these faults only")
    p.add_argument("--outage-s", type=float, default=60.0, help="MLflow outage length")
    p.add_argument("--db-outage-s", type=float, default=30.0, help="PostgreSQL outage length")
    p.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    p.add_argument("--smoke-test", action="store_true", help="a 15 s outage")
    p.add_argument("--keep", type=Path, help="work here and keep the jobs' logs and stores")
    args = p.parse_args(argv)
    if args.smoke_test:
        args.outage_s = min(args.outage_s, 15.0)
    os.environ.update(RAY_LOCAL_ENV)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rnntune-faults-"))
        b = Bench(Path(tmp), args.outage_s, args.db_outage_s)
        mount = can_mount(Path(tmp))
        try:
            for name in args.only or FAULTS:
                fault = FAULTS[name]
                if name in NEEDS_MOUNT and not mount:
                    rows.append(Row(name, "-", notes=["not run: needs root (mount)"]))
                    continue
                start = time.monotonic()
                try:
                    row = fault(b)
                except Exception as e:  # noqa: BLE001 - the table says what broke
                    row = Row(name, "-", observed=f"bench error: {type(e).__name__}: {e}"[:200])
                row.seconds = time.monotonic() - start
                rows.append(row)
                print(f"{name}: {row.observed} ({row.seconds:.0f} s)", flush=True)
        finally:
            stop(b.server)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
