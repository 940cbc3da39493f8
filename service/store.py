"""The job store: one row per submitted job (SQLAlchemy; SQLite by default, or PostgreSQL).

The schema is versioned by Alembic (`service/migrations`): a store is upgraded to the newest
version when the service opens it, so an upgrade keeps every job it holds.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

# A job's status: the one definition (the API's schema, the CLI and the store read it here).
JobStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"]
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED = get_args(JobStatus)
ACTIVE = (PENDING, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, STOPPED)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True, default=PENDING)
    message: Mapped[str] = mapped_column(Text, default="")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Read from the spec once, at submission: views and syncs never re-validate it.
    metric: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(3))
    tracking_uri: Mapped[str] = mapped_column(Text)
    experiment: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )
    # Progress, refreshed from MLflow while the job is active and once after it ends.
    parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trials: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    best_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    champion_decision: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress_final: Mapped[int] = mapped_column(Integer, default=0)
    # The driver's verdict (tune.outcome): succeeded, succeeded_with_failed_trials, failed, ...
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    cause: Mapped[str | None] = mapped_column(Text, nullable=True)


class Owner(Base):
    """One row per job owner: admissions lock it, so one owner's quota checks run one at a time."""

    __tablename__ = "owners"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    admissions: Mapped[int] = mapped_column(Integer, default=0)


class OverQuota(Exception):
    """`add_within_quota` found the owner at their limit of active jobs."""

    def __init__(self, active: int) -> None:
        super().__init__(active)
        self.active = active


class JobStore:
    """Owns the engine; every call is its own short transaction."""

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        self.engine = _engine(url, connect_timeout_s)
        upgrade(self.engine)
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as s:
            yield s

    def add(self, job: Job) -> Job:
        with self.session() as s:
            s.add(job)
        return job

    def add_within_quota(self, job: Job, max_active: int) -> Job:
        """Stores `job` unless its owner already has `max_active` active jobs, atomically.

        The owner's row is updated first, so the write lock (SQLite) or the row lock (Postgres)
        is taken before the count: concurrent admissions of one owner count one after another,
        across threads and across service replicas sharing the database.
        """
        self._ensure_owner(job.owner)
        with self.session() as s:
            s.execute(
                update(Owner)
                .where(Owner.owner == job.owner)
                .values(admissions=Owner.admissions + 1)
            )
            active = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.owner == job.owner, Job.status.in_(ACTIVE))
            )
            if active >= max_active:
                raise OverQuota(active)  # rolls the transaction back
            s.add(job)
        return job

    def _ensure_owner(self, owner: str) -> None:
        try:
            with self.session() as s:
                if s.get(Owner, owner) is None:
                    s.add(Owner(owner=owner, admissions=0))
        except IntegrityError:
            pass  # another admission created it first

    def get(self, job_id: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, job_id)

    def update(self, job_id: str, **fields: Any) -> Job:
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(job_id)
            for k, v in fields.items():
                setattr(job, k, v)
        return job

    def list(
        self, owner: str | None, status: str | None, limit: int, offset: int
    ) -> tuple[list[Job], int]:
        """A page of jobs, newest first; `owner=None` lists everyone's (admins)."""
        query = select(Job)
        if owner is not None:
            query = query.where(Job.owner == owner)
        if status is not None:
            query = query.where(Job.status == status)
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
            ).all()
        return list(rows), total

    def active(self, owner: str | None = None) -> list[Job]:
        query = select(Job).where(Job.status.in_(ACTIVE))
        if owner is not None:
            query = query.where(Job.owner == owner)
        with self.session() as s:
            return list(s.scalars(query).all())

    def ping(self) -> None:
        """Raises unless the database answers."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()


MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x726E6E74756E65  # PostgreSQL advisory lock: one replica migrates at a time


def upgrade(engine: Engine) -> None:
    """Brings the store to the newest schema.

    A store made before versioning (by `create_all` and hand-added columns) is first stamped
    with the revision its tables match. Concurrent starts are serialised: PostgreSQL by an
    advisory lock, SQLite by its write lock (a start that loses the race retries and finds the
    store already upgraded).
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                config.attributes["connection"] = conn
                unversioned = _unversioned_revision(conn)
                if unversioned is not None:
                    command.stamp(config, unversioned)
                command.upgrade(config, "head")
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))


def _unversioned_revision(conn: Connection) -> str | None:
    """The revision a store made before Alembic matches; None for a versioned or empty one."""
    found = inspect(conn)
    tables = set(found.get_table_names())
    if "alembic_version" in tables or "jobs" not in tables:
        return None
    columns = {c["name"] for c in found.get_columns("jobs")}
    if "outcome" in columns:
        return "0004"
    if "owners" in tables:
        return "0003"
    if "metric" in columns:
        return "0002"
    return "0001"


def _engine(url: str, connect_timeout_s: float) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The service's threadpool shares the engine; SQLite serialises the writes.
        return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    # A database that is down answers within the timeout (libpq's minimum is 2 s), and a
    # connection it dropped (a restart) is replaced before use, not failed on.
    timeout = {"connect_timeout": max(2, math.ceil(connect_timeout_s))}
    return create_engine(url, pool_pre_ping=True, connect_args=timeout)
