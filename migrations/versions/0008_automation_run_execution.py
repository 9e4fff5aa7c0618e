"""automation run execution: selection, backfills, retries, progress; audit links as FKs; automation webhooks

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 00:40:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('automation_runs', sa.Column('trigger', sa.Text(), nullable=True))
    op.add_column('automation_runs', sa.Column('selected_fiche_ids', postgresql.ARRAY(sa.Text()),
                                               server_default=sa.text("'{}'::text[]"), nullable=False))
    op.add_column('automation_runs', sa.Column('backfill_ids', postgresql.ARRAY(sa.Text()),
                                               server_default=sa.text("'{}'::text[]"), nullable=False))
    op.add_column('automation_runs', sa.Column('attempt', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.add_column('automation_runs', sa.Column('last_progress', postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    # audits keep their rows when a schedule or run is deleted; only the links go (spec 05 §1.7)
    op.execute("UPDATE audits SET automation_run_id = NULL WHERE automation_run_id IS NOT NULL AND NOT EXISTS "
               "(SELECT 1 FROM automation_runs r WHERE r.id = audits.automation_run_id)")
    op.execute("UPDATE audits SET automation_schedule_id = NULL WHERE automation_schedule_id IS NOT NULL AND NOT EXISTS "
               "(SELECT 1 FROM automation_schedules s WHERE s.id = audits.automation_schedule_id)")
    op.create_foreign_key('fk_audits_automation_run', 'audits', 'automation_runs', ['automation_run_id'], ['id'],
                          ondelete='SET NULL')
    op.create_foreign_key('fk_audits_automation_schedule', 'audits', 'automation_schedules',
                          ['automation_schedule_id'], ['id'], ondelete='SET NULL')
    op.create_index('ix_audits_automation_run_id', 'audits', ['automation_run_id'], unique=False)
    op.add_column('webhook_deliveries', sa.Column('automation_run_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key('fk_wd_automation_run', 'webhook_deliveries', 'automation_runs', ['automation_run_id'],
                          ['id'], ondelete='CASCADE')
    op.create_index('ix_webhook_deliveries_automation_run_id', 'webhook_deliveries', ['automation_run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_automation_run_id', table_name='webhook_deliveries')
    op.drop_constraint('fk_wd_automation_run', 'webhook_deliveries', type_='foreignkey')
    op.drop_column('webhook_deliveries', 'automation_run_id')
    op.drop_index('ix_audits_automation_run_id', table_name='audits')
    op.drop_constraint('fk_audits_automation_schedule', 'audits', type_='foreignkey')
    op.drop_constraint('fk_audits_automation_run', 'audits', type_='foreignkey')
    for column in ('last_progress', 'attempt', 'backfill_ids', 'selected_fiche_ids', 'trigger'):
        op.drop_column('automation_runs', column)
