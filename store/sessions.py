"""Signed-in browsers, kept in the database so that a session can end on the server.

The cookie carries a random session id (inside Flask's signed cookie); the table keeps only its
SHA-256, so reading the table gives nobody a usable cookie. A session is good while its row
exists and it was seen within the idle limit. Logout deletes the row; a password change, a role
change and an admin's "sign out everywhere" delete every row of that user.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .schema import User, WebSession, utcnow

TOUCH_EVERY = dt.timedelta(minutes=1)  # seen_at is written at most this often per session


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)  # SQLite: naive UTC


def start(session: Session, user_id: int) -> str:
    """A new session for ``user_id``; returns the id to put in the cookie."""
    sid = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(WebSession(id=_digest(sid), user_id=user_id, created_at=now, seen_at=now))
    session.flush()
    return sid


def user_for(session: Session, session_id: str, idle_s: float) -> User | None:
    """The user of a live session (seen within ``idle_s``), or None. Marks it seen."""
    row = session.execute(select(WebSession, User).join(User, User.id == WebSession.user_id)
                          .where(WebSession.id == _digest(session_id))).first()
    if row is None:
        return None
    ws, user = row
    now = utcnow()
    seen = _aware(ws.seen_at)
    if now - seen > dt.timedelta(seconds=idle_s):
        session.execute(delete(WebSession).where(WebSession.id == ws.id))
        return None
    if now - seen > TOUCH_EVERY:
        session.execute(update(WebSession).where(WebSession.id == ws.id).values(seen_at=now))
    return user


def end(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id == _digest(session_id)))


def end_all(session: Session, user_id: int) -> int:
    """Sign ``user_id`` out everywhere; returns how many sessions ended."""
    return session.execute(delete(WebSession).where(WebSession.user_id == user_id)).rowcount


def count(session: Session, user_id: int) -> int:
    return len(session.scalars(select(WebSession.id).where(WebSession.user_id == user_id)).all())


def prune(session: Session, idle_s: float) -> int:
    """Forget sessions idle for longer than ``idle_s`` (their cookies are refused anyway)."""
    cutoff = utcnow() - dt.timedelta(seconds=idle_s)
    return session.execute(delete(WebSession).where(WebSession.seen_at < cutoff)).rowcount
