"""One row per job owner: admissions lock it, so one owner's quota checks run one at a time.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("admissions", sa.Integer(), nullable=False),
    )
