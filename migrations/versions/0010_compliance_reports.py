"""compliance reports: daily and weekly (issue 10)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 01:00:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _sections() -> list[sa.Column]:
    jsonb = postgresql.JSONB(astext_type=sa.Text())
    return [
        sa.Column('generated_at', sa.DateTime(), nullable=False),
        sa.Column('dagster_run_id', sa.Text(), nullable=True),
        sa.Column('audits_count', sa.Integer(), server_default=sa.text('0'), nullable=False),
        sa.Column('mean_score', sa.Float(), nullable=True),
        sa.Column('compliant_rate', sa.Float(), nullable=True),
        sa.Column('totals', jsonb, nullable=False),
        sa.Column('niveau_counts', jsonb, nullable=False),
        sa.Column('score_distribution', jsonb, nullable=False),
        sa.Column('per_groupe', jsonb, nullable=False),
        sa.Column('per_advisor', jsonb, nullable=False),
        sa.Column('critical_steps', jsonb, nullable=False),
        sa.Column('control_points', jsonb, nullable=False),
        sa.Column('top_missed_points', jsonb, nullable=False),
        sa.Column('gating', jsonb, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        'daily_compliance_reports',
        sa.Column('day', sa.Text(), nullable=False),
        *_sections(),
        sa.PrimaryKeyConstraint('day'),
    )
    op.create_table(
        'weekly_compliance_reports',
        sa.Column('week', sa.Text(), nullable=False),
        sa.Column('week_start', sa.Text(), nullable=False),
        sa.Column('days', postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"), nullable=False),
        *_sections(),
        sa.PrimaryKeyConstraint('week'),
    )


def downgrade() -> None:
    op.drop_table('weekly_compliance_reports')
    op.drop_table('daily_compliance_reports')
