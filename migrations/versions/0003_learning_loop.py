"""learning loop

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_lock',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('owner', sa.String(length=100), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolved_by_version_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_review_task_resolved_by_version', 'model_version', ['resolved_by_version_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_constraint('fk_review_task_resolved_by_version', type_='foreignkey')
        batch_op.drop_column('resolved_by_version_id')

    op.drop_table('job_lock')
