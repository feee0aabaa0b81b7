"""object storage: images registered in place (location + ETag, hash filled in by the worker);
head checkpoints kept in the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.alter_column('sha256', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('storage_key', existing_type=sa.String(length=200),
                              type_=sa.String(length=1200), existing_nullable=False)
        batch_op.add_column(sa.Column('etag', sa.String(length=200), nullable=True))
        batch_op.create_index('uq_image_location', ['storage_key', 'etag'], unique=True)
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checkpoint', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_version', schema=None) as batch_op:
        batch_op.drop_column('checkpoint')
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_index('uq_image_location')
        batch_op.drop_column('etag')
        batch_op.alter_column('storage_key', existing_type=sa.String(length=1200),
                              type_=sa.String(length=200), existing_nullable=False)
        batch_op.alter_column('sha256', existing_type=sa.String(length=64), nullable=False)
