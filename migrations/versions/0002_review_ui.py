"""review web UI: skips, claim index, label indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

CLAIMABLE = "state IN ('open', 'claimed')"


def upgrade() -> None:
    op.create_table('review_skip',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['review_task.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'user_id')
    )
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.create_index('ix_review_task_claimable', ['priority', 'id'], unique=False,
                              sqlite_where=sa.text(CLAIMABLE), postgresql_where=sa.text(CLAIMABLE))

    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.create_index('uq_label_task_user', ['task_id', 'user_id'], unique=True)
        batch_op.create_index('ix_label_user_id', ['user_id', 'id'], unique=False)
        batch_op.create_index('ix_label_created_at', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_index('ix_label_created_at')
        batch_op.drop_index('ix_label_user_id')
        batch_op.drop_index('uq_label_task_user')

    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_index('ix_review_task_claimable', sqlite_where=sa.text(CLAIMABLE),
                            postgresql_where=sa.text(CLAIMABLE))

    op.drop_table('review_skip')
