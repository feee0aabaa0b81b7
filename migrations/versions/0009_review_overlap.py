"""several reviewers per task (a task's final class, who adjudicated it), gold images and tasks,
reviewers flagged on gold

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('final_cls', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('adjudicated_by', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_review_task_adjudicated_by', 'user_account',
                                    ['adjudicated_by'], ['id'])
    op.create_table(
        'gold_image',
        sa.Column('image_id', sa.Integer(), nullable=False),
        sa.Column('cls', sa.String(length=20), nullable=False),
        sa.Column('source', sa.String(length=200), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['created_by'], ['user_account.id']),
        sa.PrimaryKeyConstraint('image_id'))
    op.create_table(
        'gold_task',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['task_id'], ['review_task.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('task_id'))
    op.create_index('ix_gold_task_user_id', 'gold_task', ['user_id'])
    op.create_table(
        'reviewer_gold',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('flagged_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cleared_by', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['cleared_by'], ['user_account.id']),
        sa.PrimaryKeyConstraint('user_id'))


def downgrade() -> None:
    op.drop_table('reviewer_gold')
    op.drop_index('ix_gold_task_user_id', table_name='gold_task')
    op.drop_table('gold_task')
    op.drop_table('gold_image')
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_constraint('fk_review_task_adjudicated_by', type_='foreignkey')
        batch_op.drop_column('adjudicated_by')
        batch_op.drop_column('final_cls')
