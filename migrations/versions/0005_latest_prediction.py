"""each image points at its newest prediction (browse at 1M images)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.add_column(sa.Column('latest_prediction_id', sa.Integer(), nullable=True))
    # backfill: the newest prediction of every image that has one (from here on the writers of
    # predictions keep it, in their own transaction: store/queries.py)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE image SET latest_prediction_id = p.pid "
                   "FROM (SELECT image_id, max(id) AS pid FROM prediction GROUP BY image_id) p "
                   "WHERE p.image_id = image.id")
    else:
        op.execute("UPDATE image SET latest_prediction_id = "
                   "(SELECT max(p.id) FROM prediction p WHERE p.image_id = image.id)")


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_column('latest_prediction_id')
