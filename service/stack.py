"""`rnntune up` / `down`: a local stack on loopback (Ray head, MLflow server, job service).

Each component runs in its own session; `down` stops exactly the process trees `up` started,
recorded with their start times in `$RNNTUNE_HOME/stack.json` (a recycled pid is never killed).
The same launchers start the real processes the integration tests use.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from tune.local import LOOPBACK, free_port, home, started, still_running
from tune.watchdog import end_processes

# Every Ray process on loopback, no usage reporting, token auth off unless a token is given.
RAY_LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def bin_dir() -> Path:
    return Path(sys.executable).parent


@dataclass
class Component:
    name: str
    pid: int
    started: float  # tune.local.started: tells our process from a recycled pid
    url: str
    log: str

    def alive(self) -> bool:
        return still_running(self.pid, self.started)


@dataclass
class Stack:
    url: str
    token: str
    ray_address: str
    ray_token: str  # the head runs with RAY_AUTH_MODE=token; clients send this bearer token
    tracking_uri: str
    dir: str
    ray_temp_dir: str
    components: list[Component] = field(default_factory=list)
    allowed_url_prefixes: list[str] = field(default_factory=list)  # where jobs may read data
    mlflow_auth: MlflowAuth | None = None  # the admin: the service and job drivers write as it
    mlflow_reader: tuple[str, str] | None = None  # a read-only user for the MLflow UI
    databases: dict[str, str] = field(default_factory=dict)  # jobs / mlflow / mlflow_auth


@dataclass
class MlflowAuth:
    """MLflow's basic-auth app, as the deployed server runs it (deploy/serving/entrypoint.py): every
    request needs credentials, and only this admin may write; every other user reads."""

    password: str
    secret_key: str  # the CSRF key of the server's login pages
    database_uri: str  # MLflow's user database
    username: str = "rnntune-admin"

    def client_env(self) -> dict[str, str]:
        """What an MLflow client writing as the admin needs (the service, the job drivers)."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password,
        }


def launch(name: str, argv: list[str], env: dict[str, str], logdir: Path, url: str) -> Component:
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            env={
                **os.environ,
                "PATH": f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: signals from a terminal skip it
        )
    return Component(name, proc.pid, started(proc.pid), url, str(log))


def start_ready(
    name: str,
    argv: list[str],
    env: dict[str, str],
    logdir: Path,
    url: str,
    health: str,
    timeout: float = 120.0,
) -> Component:
    """`launch`, then wait until `url + health` answers; stopped again if it never does."""
    c = launch(name, argv, env, logdir, url)
    try:
        wait_ready(c, health, timeout)
    except BaseException:
        stop(c)
        raise
    return c


def start_ray_head(
    logdir: Path, temp_dir: Path, num_cpus: int | None = None, env: dict | None = None
) -> Component:
    """`ray start --head --block` on loopback, with its own temp dir: a later bare `ray.init()`
    elsewhere on the machine neither finds nor joins this cluster."""
    dashboard = free_port()
    argv = [str(bin_dir() / "ray"), "start", "--head", "--block", "--disable-usage-stats"]
    argv += ["--temp-dir", str(temp_dir)]
    argv += ["--port", str(free_port()), "--dashboard-host", LOOPBACK]
    argv += ["--dashboard-port", str(dashboard), "--ray-client-server-port", str(free_port())]
    argv += ["--dashboard-agent-listen-port", str(free_port())]
    argv += ["--num-cpus", str(num_cpus or os.cpu_count() or 1)]
    return launch(
        "ray", argv, {**RAY_LOCAL_ENV, **(env or {})}, logdir, f"http://{LOOPBACK}:{dashboard}"
    )


def start_mlflow(
    root: Path,
    port: int | None = None,
    backend_uri: str | None = None,
    auth: MlflowAuth | None = None,
) -> Component:
    """`mlflow server` on loopback with proxied artifacts under `root`; its runs in
    `backend_uri` (default: SQLite under `root`), behind basic auth when `auth` is given."""
    from deploy.serving.entrypoint import auth_config

    port = port or free_port()
    argv = [str(bin_dir() / "mlflow"), "server", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--artifacts-destination", (root / "artifacts").as_uri(), "--workers", "1"]
    env = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # in the environment, not argv: a database URL may hold a password
        "MLFLOW_BACKEND_STORE_URI": backend_uri or f"sqlite:///{root / 'mlflow.db'}",
    }
    if auth is not None:
        argv += ["--app-name", "basic-auth"]
        settings = {
            "MLFLOW_AUTH_DATABASE_URI": auth.database_uri,
            "MLFLOW_AUTH_ADMIN_USERNAME": auth.username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": auth.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": auth.secret_key,
        }
        root.mkdir(parents=True, exist_ok=True)
        env |= auth_config(settings, root / "mlflow-auth.ini")
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = auth.secret_key
    return launch("mlflow", argv, env, root / "logs", f"http://{LOOPBACK}:{port}")


DATABASES = {"jobs": "rnntune", "mlflow": "mlflow", "mlflow_auth": "mlflow_auth"}  # as compose
# SQLite: the files earlier releases of the stack used (jobs.db, mlflow.db) keep their names
SQLITE_FILES = {"jobs": "jobs.db", "mlflow": "mlflow.db", "mlflow_auth": "mlflow_auth.db"}


def stack_databases(server_url: str | None, root: Path) -> dict[str, str]:
    """The job store's, MLflow's and MLflow's users' databases: SQLite files under `root`, or
    databases of those names on the PostgreSQL server at `server_url`, created when missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    if server_url is None:
        return {k: f"sqlite:///{root / name}" for k, name in SQLITE_FILES.items()}
    try:
        url = make_url(server_url)
    except ArgumentError:
        url = None
    if url is None or url.get_backend_name() != "postgresql":
        raise ValueError(
            "--database-url: expected a PostgreSQL server, "
            "postgresql://USER:PASSWORD@HOST:PORT/ (the databases are created on it)"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver installed with rnntune
    engine = create_engine(
        url.set(database=url.database or "postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            present = set(conn.scalars(text("SELECT datname FROM pg_database")))
            for name in DATABASES.values():
                if name not in present:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as e:
        reason = str(e.orig if getattr(e, "orig", None) else e).strip().splitlines()[0]
        raise ValueError(f"--database-url: {reason}") from None
    finally:
        engine.dispose()
    return {
        k: url.set(database=name).render_as_string(hide_password=False)
        for k, name in DATABASES.items()
    }


def start_service(logdir: Path, settings_env: dict[str, str], port: int | None = None) -> Component:
    port = port or free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--host", LOOPBACK, "--port", str(port), "--log-level", "warning"]
    return launch("service", argv, settings_env, logdir, f"http://{LOOPBACK}:{port}")


def wait_ready(c: Component, path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not c.alive():
            raise RuntimeError(f"{c.name} exited during start-up; see {c.log}:\n{_tail(c.log)}")
        try:
            with urllib.request.urlopen(f"{c.url}{path}", timeout=3):
                return
        except urllib.error.HTTPError as e:
            # Up but guarded (Ray's token auth) counts as ready; a 404 does not: Serve's proxy
            # answers 404 until the application's route has reached it.
            if e.code in (401, 403):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{c.name} did not answer {c.url}{path} within {timeout:.0f} s; see {c.log}")


def stop(*components: Component, grace: float = 15.0) -> int:
    """Stops the components' whole process trees together (TERM, then KILL); returns the count."""
    procs: list[psutil.Process] = []
    for c in components:
        if not c.alive():
            continue
        root = psutil.Process(c.pid)
        for p in [root, *root.children(recursive=True), *_same_session(c.pid)]:
            if p not in procs:
                procs.append(p)
    end_processes(procs, grace)
    return len(procs)


def _same_session(pid: int) -> list[psutil.Process]:
    """Processes still in the session `pid` leads (children re-parented after their parent died)."""
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == pid and p.pid != pid:
                found.append(p)
        except (OSError, psutil.Error):
            continue
    return found


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def up(
    num_cpus: int | None = None,
    allow_paths: list[str] | None = None,
    database_url: str | None = None,
) -> Stack:
    """Starts Ray, MLflow and the service on loopback; writes `$RNNTUNE_HOME/stack.json`.

    Jobs may read data only under `allow_paths` (default: the current folder) and write under
    the stack's storage; the service checks each spec and the Ray head's job drivers again.
    MLflow requires credentials: the service and the job drivers write as its admin, and a
    read-only user (named after the caller) is made for people. The job store, MLflow and its
    users live in SQLite files, or on the PostgreSQL server at `database_url`.
    """
    from deploy.serving.mlflow_users import create_user
    from service.auth import new_token

    root = home() / "stack"
    if (state := load_stack()) is not None and any(c.alive() for c in state.components):
        raise RuntimeError(f"a stack is already up (service at {state.url}); `rnntune down` first")
    root.mkdir(parents=True, exist_ok=True)
    allowed = [
        p if "://" in p else str(Path(p).expanduser().resolve())
        for p in (allow_paths or [str(Path.cwd())])
    ]
    token, ray_token = new_token(), new_token()
    stack_tmp = tempfile.mkdtemp(prefix="rnt-")  # short: Ray's socket paths must fit 107 bytes
    tokens_file = _write_tokens(root, token)
    databases = stack_databases(database_url, root)
    auth = MlflowAuth(new_token(), new_token(), databases["mlflow_auth"])
    reader = (_user(), new_token())
    started: list[Component] = []
    try:
        mlflow = start_mlflow(root, backend_uri=databases["mlflow"], auth=auth)
        started.append(mlflow)
        policy_env = policy_settings(allowed, str(root / "storage"), mlflow.url)
        ray_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray_token, **policy_env}
        ray_head = start_ray_head(
            root / "logs", Path(stack_tmp), num_cpus, ray_env | auth.client_env()
        )
        started.append(ray_head)
        wait_ready(ray_head, "/api/version")
        wait_ready(mlflow, "/health")
        create_user(mlflow.url, (auth.username, auth.password), *reader)
        env = service_env(
            root, ray_head.url, mlflow.url, tokens_file, ray_token, allowed, databases["jobs"]
        )
        env |= auth.client_env()
        service = start_service(root / "logs", env)
        started.append(service)
        wait_ready(service, "/healthz")
    except BaseException:
        stop(*started)
        shutil.rmtree(stack_tmp, ignore_errors=True)
        raise
    urls = (service.url, token, ray_head.url, ray_token, mlflow.url, str(root), stack_tmp)
    stack = Stack(*urls, started, allowed, auth, reader, databases)
    save_stack(stack)
    return stack


def _write_tokens(root: Path, token: str) -> Path:
    """The service's token file: the caller as admin (only the token's hash is kept)."""
    from service.auth import hash_token

    tokens_file = root / "tokens.json"
    tokens_file.write_text(
        json.dumps([{"user": _user(), "role": "admin", "sha256": hash_token(token)}])
    )
    tokens_file.chmod(0o600)
    return tokens_file


def save_stack(stack: Stack) -> None:
    """`$RNNTUNE_HOME/stack.json`: what `rnntune down` stops and the CLI connects to."""
    path = home() / "stack.json"
    path.write_text(json.dumps(asdict(stack), indent=2))
    path.chmod(0o600)


def policy_settings(allowed: list[str], storage_url: str, tracking_uri: str) -> dict[str, str]:
    """The settings the service and the cluster's job drivers both read (tune/policy.py)."""
    return {
        "RNNTUNE_ALLOWED_URL_PREFIXES": json.dumps(allowed),
        "RNNTUNE_STORAGE_URL": storage_url,
        "RNNTUNE_TRACKING_URI": tracking_uri,
    }


def service_env(
    root: Path,
    ray_url: str,
    tracking_uri: str,
    tokens_file: Path,
    ray_token: str | None,
    allowed: list[str] | None = None,
    database_url: str | None = None,
) -> dict[str, str]:
    """The service's settings for a local stack (every field from `RNNTUNE_*`); the job store
    in `database_url`, by default SQLite under `root`."""
    return {
        **({"RNNTUNE_RAY_AUTH_TOKEN": ray_token} if ray_token else {}),
        "RNNTUNE_DATABASE_URL": database_url or f"sqlite:///{root / SQLITE_FILES['jobs']}",
        "RNNTUNE_RAY_ADDRESS": ray_url,
        "RNNTUNE_CLUSTER_PYTHON": sys.executable,
        "RNNTUNE_TOKENS_FILE": str(tokens_file),
        **policy_settings(allowed or [], str(root / "storage"), tracking_uri),
        **RAY_LOCAL_ENV,
    }


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def load_stack() -> Stack | None:
    path = home() / "stack.json"
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    comps = [Component(**c) for c in raw.pop("components", [])]
    auth = raw.pop("mlflow_auth", None)
    reader = raw.pop("mlflow_reader", None)
    return Stack(
        **raw,
        components=comps,
        mlflow_auth=MlflowAuth(**auth) if auth else None,
        mlflow_reader=tuple(reader) if reader else None,
    )


def down() -> int:
    """Stops what `up` started; returns the number of processes."""
    stack = load_stack()
    if stack is None:
        return 0
    stopped = stop(*stack.components)
    shutil.rmtree(stack.ray_temp_dir, ignore_errors=True)
    (home() / "stack.json").unlink(missing_ok=True)
    return stopped
