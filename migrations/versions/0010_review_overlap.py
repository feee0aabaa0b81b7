"""several reviewers per task: a task's final class and who adjudicated it

Revision ID: 0010_review_overlap
Revises: 0005
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_review_overlap'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('final_cls', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('adjudicated_by', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_review_task_adjudicated_by', 'user_account',
                                    ['adjudicated_by'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_constraint('fk_review_task_adjudicated_by', type_='foreignkey')
        batch_op.drop_column('adjudicated_by')
        batch_op.drop_column('final_cls')
