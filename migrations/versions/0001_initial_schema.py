"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('image',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=200), nullable=False),
    sa.Column('source_name', sa.String(length=500), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_status'), ['status'], unique=False)

    op.create_table('model_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=False),
    sa.Column('encoder', sa.String(length=200), nullable=False),
    sa.Column('path', sa.String(length=500), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.create_index('uq_model_version_one_active', ['state'], unique=True, sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.create_table('user_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('password_hash', sa.String(length=300), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('batch_image',
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('source_name', sa.String(length=500), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('batch_id', 'image_id')
    )
    with op.batch_alter_table('batch_image', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batch_image_image_id'), ['image_id'], unique=False)

    op.create_table('embedding',
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('encoder', sa.String(length=200), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('image_id', 'encoder')
    )
    op.create_table('prediction',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('encoder', sa.String(length=200), nullable=False),
    sa.Column('head_probs', sa.JSON(), nullable=True),
    sa.Column('p_road', sa.Float(), nullable=True),
    sa.Column('zs_probs', sa.JSON(), nullable=False),
    sa.Column('zs_p_road', sa.Float(), nullable=False),
    sa.Column('predicted_class', sa.String(length=20), nullable=False),
    sa.Column('zs_class', sa.String(length=20), nullable=False),
    sa.Column('routed', sa.Boolean(), nullable=False),
    sa.Column('reasons', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_version.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.create_index('uq_prediction_image_version', ['image_id', 'model_version_id'], unique=True)
        batch_op.create_index('uq_prediction_image_zeroshot', ['image_id'], unique=True, sqlite_where=sa.text('model_version_id IS NULL'), postgresql_where=sa.text('model_version_id IS NULL'))

    op.create_table('review_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('prediction_id', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('reasons', sa.String(length=200), nullable=False),
    sa.Column('priority', sa.Float(), nullable=False),
    sa.Column('lease_owner', sa.String(length=100), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prediction_id'], ['prediction.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_task_image_id'), ['image_id'], unique=False)
        batch_op.create_index('ix_review_task_queue', ['state', 'priority', 'id'], unique=False)
        batch_op.create_index('uq_review_task_one_open', ['image_id'], unique=True, sqlite_where=sa.text("state IN ('open', 'claimed')"), postgresql_where=sa.text("state IN ('open', 'claimed')"))

    op.create_table('label',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('cls', sa.String(length=20), nullable=False),
    sa.Column('time_on_item_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['image.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['review_task.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_image_id'), ['image_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('label', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_image_id'))

    op.drop_table('label')
    with op.batch_alter_table('review_task', schema=None) as batch_op:
        batch_op.drop_index('uq_review_task_one_open', sqlite_where=sa.text("state IN ('open', 'claimed')"), postgresql_where=sa.text("state IN ('open', 'claimed')"))
        batch_op.drop_index('ix_review_task_queue')
        batch_op.drop_index(batch_op.f('ix_review_task_image_id'))

    op.drop_table('review_task')
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_index('uq_prediction_image_zeroshot', sqlite_where=sa.text('model_version_id IS NULL'), postgresql_where=sa.text('model_version_id IS NULL'))
        batch_op.drop_index('uq_prediction_image_version')

    op.drop_table('prediction')
    op.drop_table('embedding')
    with op.batch_alter_table('batch_image', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batch_image_image_id'))

    op.drop_table('batch_image')
    op.drop_table('user_account')
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.drop_index('uq_model_version_one_active', sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))

    op.drop_table('model_version')
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_status'))

    op.drop_table('image')
    op.drop_table('batch')
