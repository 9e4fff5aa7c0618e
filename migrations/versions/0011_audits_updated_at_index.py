"""audits.updated_at index: the report trigger reads the audits changed since its lookback (issue 10)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 06:00:00
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audits_updated_at', 'audits', ['updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audits_updated_at', table_name='audits')
