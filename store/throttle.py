"""Login attempts counted in the database, before the password is checked.

Each attempt is one atomic ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` (SQLite and
Postgres alike) that adds one to its key's count in the current window and returns the new
count. The caller commits it and only then compares the password, so N parallel guesses get N
distinct counts and at most the allowance gets through, whichever process or machine serves
them. A window older than ``window_s`` starts again at 1.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random

from sqlalchemy import case, delete, update
from sqlalchemy.orm import Session

from .schema import LoginAttempt, utcnow
from .sql import dialect_insert

LA = LoginAttempt.__table__


def key(*parts: str) -> str:
    """A fixed-size key for what is counted (a name at an address, an address)."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def count_attempt(session: Session, k: str, window_s: float) -> tuple[int, float]:
    """Count one attempt for ``k``: (attempts in the window including this one, seconds until
    the window ends)."""
    now = utcnow()
    stale = LA.c.window_start < now - dt.timedelta(seconds=window_s)
    stmt = (dialect_insert(session)(LA).values(key=k, attempts=1, window_start=now)
            .on_conflict_do_update(index_elements=[LA.c.key], set_={
                "attempts": case((stale, 1), else_=LA.c.attempts + 1),
                "window_start": case((stale, now), else_=LA.c.window_start)})
            .returning(LA.c.attempts, LA.c.window_start))
    attempts, start = session.execute(stmt).one()
    if start.tzinfo is None:  # SQLite hands back naive UTC
        start = start.replace(tzinfo=dt.timezone.utc)
    if random.random() < 0.01:  # now and then, forget windows long over (bounded table)
        session.execute(delete(LoginAttempt).where(
            LoginAttempt.window_start < now - dt.timedelta(seconds=2 * window_s)))
    return attempts, max(0.0, window_s - (now - start).total_seconds())


def forget(session: Session, k: str) -> None:
    """A successful sign-in: this key starts afresh."""
    session.execute(delete(LoginAttempt).where(LoginAttempt.key == k))


def give_back(session: Session, k: str) -> None:
    """Take back one counted attempt (a success from a shared address)."""
    session.execute(update(LoginAttempt).where(LoginAttempt.key == k, LoginAttempt.attempts > 0)
                    .values(attempts=LoginAttempt.attempts - 1))
