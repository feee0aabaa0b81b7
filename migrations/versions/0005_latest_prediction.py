"""each image points at its newest prediction (browse at 1M images)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""
from alembic import op
import sqlalchemy as sa

from store.pausepoints import reach


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BACKFILL_IDS = 5000  # images per backfill batch (each its own short transaction on Postgres)


def upgrade() -> None:
    bind = op.get_bind()
    # the column may be there already: a backfill that was interrupted is simply run again
    if "latest_prediction_id" not in {c["name"] for c in sa.inspect(bind).get_columns("image")}:
        with op.batch_alter_table('image', schema=None) as batch_op:
            batch_op.add_column(sa.Column('latest_prediction_id', sa.Integer(), nullable=True))
    # backfill: the newest prediction of every image that has one (from here on the writers of
    # predictions keep it, in their own transaction: store/predictions.py)
    if bind.dialect.name == "postgresql":
        # Outside the schema change's transaction, in batches of image ids: ADD COLUMN holds
        # ACCESS EXCLUSIVE on image until its transaction ends, and a one-statement backfill in
        # it blocked every reader of image for as long as the table is big. Each batch commits on
        # its own and only moves a pointer forward, so workers scoring meanwhile are never undone.
        with op.get_context().autocommit_block():
            low, high = bind.execute(sa.text("SELECT min(id), max(id) FROM image")).one()
            for start in range(low or 0, (high or -1) + 1, BACKFILL_IDS):
                bind.execute(sa.text(
                    "UPDATE image SET latest_prediction_id = p.pid FROM "
                    "(SELECT image_id, max(id) AS pid FROM prediction "
                    " WHERE image_id >= :lo AND image_id < :hi GROUP BY image_id) p "
                    "WHERE p.image_id = image.id "
                    "AND (image.latest_prediction_id IS NULL OR image.latest_prediction_id < p.pid)"),
                    {"lo": start, "hi": start + BACKFILL_IDS})
                reach("migration.0005.batch_done")
    else:  # SQLite has one writer at a time whatever the batching: one statement
        op.execute("UPDATE image SET latest_prediction_id = "
                   "(SELECT max(p.id) FROM prediction p WHERE p.image_id = image.id)")


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None) as batch_op:
        batch_op.drop_column('latest_prediction_id')
