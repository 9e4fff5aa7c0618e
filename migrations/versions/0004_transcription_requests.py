"""transcription batch dedup claims (spec 02 §5.6)

One row per fiche and UTC day submitted to `POST /api/transcriptions/batch`
(`transcribe-<fiche_id>-<YYYY-MM-DD>`), claimed with INSERT … ON CONFLICT DO NOTHING before the
Dagster launch; `run_id` is the launched run.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('transcription_requests',
    sa.Column('dedup_key', sa.Text(), nullable=False),
    sa.Column('fiche_id', sa.Text(), nullable=False),
    sa.Column('run_id', sa.Text(), nullable=True),
    sa.Column('priority', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('dedup_key')
    )
    op.create_index('ix_transcription_requests_created_at', 'transcription_requests', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_transcription_requests_created_at', table_name='transcription_requests')
    op.drop_table('transcription_requests')
