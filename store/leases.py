"""Claims that follow people: hand back every claim a reviewer holds (they signed out, or an
admin frees them), and how many tasks are waiting for somebody to pick them up.

The single-task lease rules (claim, renew, release) live in ``store.review``; these are the
per-person and per-queue views the web UI needs beside them.
"""
from __future__ import annotations

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from .schema import ReviewTask, utcnow

RT = ReviewTask.__table__


def release_all(session: Session, owner: str) -> int:
    """Give back every task ``owner`` holds (live or expired claims): they are claimable by
    anybody at once. Returns how many were released."""
    return session.execute(
        update(RT).where(RT.c.state == "claimed", RT.c.lease_owner == owner)
        .values(state="open", lease_owner=None, lease_expires_at=None, updated_at=utcnow())
    ).rowcount


def waiting_count(session: Session) -> int:
    """Tasks nobody is looking at: open, or claimed under a lease that has run out."""
    now = utcnow()
    return session.scalar(
        select(func.count()).select_from(RT)
        .where(or_(RT.c.state == "open",
                   (RT.c.state == "claimed") & (RT.c.lease_expires_at < now))))
