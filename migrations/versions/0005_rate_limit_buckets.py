"""rate limit buckets (spec 02 §2 provider start rate, shared across processes)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 22:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'rate_limit_buckets',
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('rate_limit_buckets')
