"""Model versions: which head is active, its checkpoint, and switching heads (promotion,
activation by hand, rollback), each in the caller's one transaction under the active-head guard
(store/active_head.py). Torch-free: the web UI's admin page activates and rolls back through
this module without loading a network.

A version's ``state``: ``candidate`` (trained, not promoted) -> ``active`` (the one head workers
score with) -> ``retired`` (another head was activated) or ``rolled_back`` (a rollback left it:
never the target of a later rollback, so a second rollback goes further back instead of
returning to it).
"""
from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import active_head, predictions, review
from .clock import db_now
from .schema import ModelVersion

ROLLED_BACK = "rolled_back"


class RolledBack(NamedTuple):
    from_version: int
    to_version: int
    reopened: int  # review tasks the left head's re-score had resolved, open again


def active_model(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))


def head_checkpoint(session: Session, version_id: int) -> bytes | str:
    """A model version's checkpoint: its bytes, kept in the database, or (versions recorded
    before checkpoints moved there) the file path they were saved to."""
    data, path = session.execute(select(ModelVersion.checkpoint, ModelVersion.path)
                                 .where(ModelVersion.id == version_id)).one()
    return bytes(data) if data is not None else path


def last_retired(session: Session) -> ModelVersion | None:
    """The retired head activated most recently: the one a rollback re-activates."""
    return session.scalar(select(ModelVersion)
                          .where(ModelVersion.state == "retired", ModelVersion.activated_at.is_not(None))
                          .order_by(ModelVersion.activated_at.desc()).limit(1))


def activate_model(session: Session, version_id: int) -> None:
    """Retire the active head and activate ``version_id`` in the caller's one transaction, under
    the active-head guard held until that transaction ends."""
    active_head.hold(session, exclusive=True)
    session.execute(update(ModelVersion).where(ModelVersion.state == "active")
                    .values(state="retired"))
    session.flush()
    session.execute(update(ModelVersion).where(ModelVersion.id == version_id)
                    .values(state="active", activated_at=db_now(session)))


def rollback_target(session: Session) -> ModelVersion | None:
    """The version a rollback would re-activate, or None when there is nothing to roll back."""
    return last_retired(session) if active_model(session) is not None else None


def activate(session: Session, version_id: int) -> tuple[ModelVersion, int | None]:
    """Make ``version_id`` the active head by hand. Returns it and the retired head activated
    most recently (the one it replaced, when a head was active); ValueError when there is no
    such version."""
    mv = session.get(ModelVersion, version_id)
    if mv is None:
        raise ValueError(f"no model version {version_id}")
    activate_model(session, version_id)
    previous = last_retired(session)
    return mv, previous.id if previous else None


def roll_back(session: Session) -> RolledBack:
    """Re-activate the head that was active before the current one; reopen what the current one
    resolved and point images and open tasks back at the restored head's predictions. The head
    left behind is marked ``rolled_back``. ValueError when there is nothing to roll back."""
    current = active_head.hold(session, exclusive=True)
    if current is None:
        raise ValueError("no head is active; nothing to roll back")
    previous = last_retired(session)
    if previous is None:
        raise ValueError(f"no earlier head is left behind version {current.id} (it is the first one "
                         f"activated, or the earlier ones were rolled back); nothing to roll back to")
    activate_model(session, previous.id)
    session.execute(update(ModelVersion).where(ModelVersion.id == current.id).values(state=ROLLED_BACK))
    reopened = review.reopen_resolved(session, current.id)
    predictions.point_back(session, current.id, previous.id)
    review.follow_restored_predictions(session, current.id)
    return RolledBack(current.id, previous.id, reopened)
