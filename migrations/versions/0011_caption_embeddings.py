"""zero-shot captions' text embeddings per encoder, so a re-score needs no CLIP model

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'caption_embedding',
        sa.Column('encoder', sa.String(length=200), nullable=False),
        sa.Column('captions_sha', sa.String(length=64), nullable=False),
        sa.Column('captions', sa.JSON(), nullable=False),
        sa.Column('logit_scale', sa.Float(), nullable=False),
        sa.Column('dim', sa.Integer(), nullable=False),
        sa.Column('vectors', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('encoder', 'captions_sha'),
    )


def downgrade() -> None:
    op.drop_table('caption_embedding')
