"""The job store on SQLite and PostgreSQL: persistence, atomic quotas, versioned migrations.

Every test runs on both databases (`pytest -k postgres` selects PostgreSQL's); the PostgreSQL
server is real (tests/support/postgres.py).
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from service.store import (
    ACTIVE,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Base,
    Job,
    JobStore,
    OverQuota,
)
from tune import outcome as O


def _job(job_id: str, owner: str = "eve", status: str = ACTIVE[0]) -> Job:
    return Job(
        id=job_id, owner=owner, name="n", spec={}, metric="val_acc", mode="max",
        tracking_uri="t", experiment="e", status=status, trials={},
    )  # fmt: skip


def test_job_store_persists_filters_and_pages(store_url):
    store = JobStore(store_url)
    for i, (owner, status) in enumerate([("a", RUNNING), ("a", SUCCEEDED), ("b", FAILED)]):
        store.add(_job(f"j{i}", owner, status))
    store.close()
    store = JobStore(store_url)  # a restarted service sees the same jobs
    rows, total = store.list("a", None, limit=1, offset=0)
    assert total == 2 and len(rows) == 1
    assert [j.id for j in store.active()] == ["j0"]
    assert store.list(None, FAILED, 10, 0)[1] == 1
    assert store.update("j0", status=SUCCEEDED).status == SUCCEEDED and store.active() == []
    store.close()


def test_concurrent_admissions_of_one_owner_never_pass_the_quota(store_url):
    store = JobStore(store_url)
    accepted, refused = [], []
    start = threading.Barrier(12)

    def submit(i: int) -> None:
        start.wait()
        try:
            store.add_within_quota(_job(f"j{i}"), max_active=4)
            accepted.append(i)
        except OverQuota:
            refused.append(i)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 4 and len(refused) == 8
    assert len(store.active("eve")) == 4
    assert store.add_within_quota(_job("x", owner="mallory"), max_active=4).id == "x"
    store.close()


def test_the_migrations_build_exactly_the_models_schema(store_url):
    store = JobStore(store_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


# The schemas of released versions, as their `create_all` made them (before Alembic).
def _released_schema(release: str) -> sa.MetaData:
    meta = sa.MetaData()
    first = [
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("owner", sa.String(64), index=True),
        sa.Column("name", sa.String(64)),
        sa.Column("status", sa.String(16), index=True),
        sa.Column("message", sa.Text),
        sa.Column("spec", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("parent_run_id", sa.String(64), nullable=True),
        sa.Column("experiment_id", sa.String(64), nullable=True),
        sa.Column("trials", sa.JSON),
        sa.Column("best_metric", sa.Float, nullable=True),
        sa.Column("champion_decision", sa.Text, nullable=True),
        sa.Column("progress_final", sa.Integer),
    ]
    if release == "first":
        sa.Table("jobs", meta, *first)
    else:  # the release before job outcomes: summary columns and the owners table
        summary = [sa.Column(c, sa.Text) for c in ("metric", "mode", "tracking_uri", "experiment")]
        sa.Table("jobs", meta, *first, *summary)
        sa.Table(
            "owners",
            meta,
            sa.Column("owner", sa.String(64), primary_key=True),
            sa.Column("admissions", sa.Integer),
        )
    return meta


@pytest.mark.parametrize("release", ["first", "before_outcomes"])
def test_a_store_of_a_released_schema_is_upgraded_and_keeps_every_job(store_url, release):
    meta = _released_schema(release)
    engine = sa.create_engine(store_url)
    meta.create_all(engine)
    jobs = meta.tables["jobs"]
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    old = {"name": "n", "message": "", "trials": {"completed": 2}, "progress_final": 1}
    old |= {"created_at": when, "updated_at": when}
    if release != "first":
        old |= {"metric": "val_rmse", "mode": "min", "tracking_uri": "http://m", "experiment": "e"}
    with engine.begin() as conn:
        conn.execute(
            jobs.insert(),
            [
                {"id": "done", "owner": "ann", "status": SUCCEEDED, **old,
                 "spec": {"name": "vowels", "data": {"name": "digits"}, "metric": "val_acc"}},
                {"id": "live", "owner": "bob", "status": RUNNING, **old,
                 "spec": {"name": "lm", "data": {"name": "text", "url": "/d.txt"}}},
            ],
        )  # fmt: skip
    engine.dispose()

    store = JobStore(store_url)
    done, live = store.get("done"), store.get("live")
    assert done is not None and live is not None
    assert done.status == SUCCEEDED and done.trials == {"completed": 2} and done.outcome is None
    assert [j.id for j in store.active()] == ["live"]
    if release == "first":  # the summary columns were filled from each job's spec
        assert (done.metric, done.mode, done.experiment) == ("val_acc", "max", "vowels")
        assert (live.metric, live.mode, live.experiment) == ("val_bpc", "min", "lm")
    else:
        assert (done.metric, done.tracking_uri) == ("val_rmse", "http://m")
    assert store.update("done", outcome=O.SUCCEEDED).outcome == "succeeded"
    assert store.add_within_quota(_job("new", owner="ann"), max_active=1).id == "new"
    store.close()
    again = JobStore(store_url)  # an upgraded store opens as it is
    assert {j.id for j in again.list(None, None, 10, 0)[0]} == {"done", "live", "new"}
    again.close()
