"""Corrections: a reviewer changes their mind about an image after leaving it, or takes back a
skip.

A correction is a new label row by the same reviewer (source ``correction``, no task: the task
was closed by the first label), so the history keeps every label in order; in the consensus a
correction replaces that reviewer's earlier labels of the image (``store.labels.consensus``).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .schema import Image, Label, ReviewSkip, ReviewTask, utcnow

CORRECTION = "correction"


class NotYours(LookupError):
    """The reviewer never labeled this image: there is nothing of theirs to correct."""


@dataclass
class Relabel:
    label: Label | None      # the new label (None when the class did not change)
    previous: str            # the class the reviewer had given before
    changed: bool


def own_label(session: Session, image_id: int, user_id: int) -> Label | None:
    """The reviewer's label that counts for this image: their newest."""
    return session.scalar(select(Label).where(Label.image_id == image_id, Label.user_id == user_id)
                          .order_by(Label.id.desc()).limit(1))


def relabel(session: Session, image_id: int, user_id: int, cls: str) -> Relabel:
    """Correct the reviewer's own label of an image to ``cls``. The earlier label stays in the
    history; the new one is final for this reviewer. Raises LookupError for an unknown image,
    NotYours when the reviewer never labeled it, ValueError for a class verge does not know."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
    if session.get(Image, image_id) is None:
        raise LookupError(f"no image {image_id}")
    before = own_label(session, image_id, user_id)
    if before is None:
        raise NotYours(f"you have not labeled image {image_id}; label it from the review queue")
    if before.cls == cls:
        return Relabel(None, before.cls, changed=False)
    new = Label(image_id=image_id, user_id=user_id, task_id=None, source=CORRECTION, cls=cls,
                created_at=utcnow())
    session.add(new)
    session.flush()
    return Relabel(new, before.cls, changed=True)


def unskip(session: Session, task_id: int, user_id: int, owner: str, lease_s: float) -> bool | None:
    """Take back a skip: the task may come to the reviewer again, and if nobody has picked it up
    meanwhile it comes back claimed by them. Returns True when it is theirs again, False when
    somebody else has it (or it is closed), None when they had not skipped it."""
    import datetime as dt

    if session.execute(delete(ReviewSkip).where(ReviewSkip.task_id == task_id,
                                                ReviewSkip.user_id == user_id)).rowcount != 1:
        return None
    now = utcnow()
    rt = ReviewTask.__table__
    return session.execute(
        update(rt).where(rt.c.id == task_id,
                         or_(rt.c.state == "open",
                             (rt.c.state == "claimed") & (rt.c.lease_expires_at < now)))
        .values(state="claimed", lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_s), updated_at=now)
    ).rowcount == 1
