"""The first released schema: one row per job, with its progress.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_run_id", sa.String(64), nullable=True),
        sa.Column("experiment_id", sa.String(64), nullable=True),
        sa.Column("trials", sa.JSON(), nullable=False),
        sa.Column("best_metric", sa.Float(), nullable=True),
        sa.Column("champion_decision", sa.Text(), nullable=True),
        sa.Column("progress_final", sa.Integer(), nullable=False),
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
