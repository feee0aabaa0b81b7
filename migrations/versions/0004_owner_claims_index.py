"""index for a reviewer's own claims

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.create_index('ix_review_task_owner_claims', ['lease_owner'], unique=False,
                              sqlite_where=sa.text("state = 'claimed'"),
                              postgresql_where=sa.text("state = 'claimed'"))


def downgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_index('ix_review_task_owner_claims',
                            sqlite_where=sa.text("state = 'claimed'"),
                            postgresql_where=sa.text("state = 'claimed'"))
