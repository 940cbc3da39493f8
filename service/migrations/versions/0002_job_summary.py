"""What views read without re-validating the spec: metric, mode, tracking URI, experiment.

Rows stored before get them from their spec (the job's name when it named no experiment; an
empty tracking URI when it named none: the service's default of the time is not recorded).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = {
    "metric": sa.String(32),
    "mode": sa.String(3),
    "tracking_uri": sa.Text(),
    "experiment": sa.String(256),
}


def _summary(spec: dict[str, Any]) -> dict[str, str]:
    from tune.spec import JobSpec

    try:
        metric, mode = JobSpec.model_validate(spec).monitor
    except ValueError:  # a spec this version no longer accepts keeps its stated metric
        metric = str(spec.get("metric") or "val_loss")
        mode = str(spec.get("mode") or "min")
    tracking = spec.get("tracking") or {}
    return {
        "metric": metric[:32],
        "mode": mode[:3],
        "tracking_uri": str(tracking.get("uri") or ""),
        "experiment": str(tracking.get("experiment") or spec.get("name") or "")[:256],
    }


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, kind in COLUMNS.items():
            batch.add_column(sa.Column(name, kind, nullable=True))
    jobs = sa.table("jobs", sa.column("id"), sa.column("spec", sa.JSON()), *map(sa.column, COLUMNS))
    conn = op.get_bind()
    for job_id, spec in conn.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(**_summary(spec or {})))
    with op.batch_alter_table("jobs") as batch:
        for name, kind in COLUMNS.items():
            batch.alter_column(name, existing_type=kind, nullable=False)
