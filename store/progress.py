"""Review progress per batch: how many of a batch's routed images people have labeled."""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .schema import BatchImage, Label


def labeled_counts(session: Session, batch_ids: Sequence[int]) -> dict[int, int]:
    """batch id -> images of that batch with at least one reviewer's label."""
    if not batch_ids:
        return {}
    return dict(session.execute(
        select(BatchImage.batch_id, func.count(func.distinct(Label.image_id)))
        .join(Label, Label.image_id == BatchImage.image_id)
        .where(BatchImage.batch_id.in_(list(batch_ids)), Label.user_id.is_not(None))
        .group_by(BatchImage.batch_id)).all())
