"""The one guard for "which head is active".

Everything that changes the active head (promotion, manual activation, rollback) holds it
exclusively; everything that writes results that depend on it (a chunk's predictions and review
tasks, a re-score page) holds it shared and re-reads the active version inside the same
transaction before writing. So a write never lands for a head that stopped being active after
the writer looked, and a head never changes under a write in progress.

Postgres: a transaction-scoped advisory lock (shared/exclusive), released at commit or rollback.
SQLite: a write statement, which takes the database's single write lock for the rest of the
transaction (SQLite only starts a real transaction at the first write, so a plain SELECT would
read outside it)."""
from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from .schema import ModelVersion

LOCK_KEY = 0x7665726765  # "verge": the advisory lock's number, the same in every process


def hold(session: Session, exclusive: bool = False) -> ModelVersion | None:
    """Take the guard for the rest of the caller's transaction; returns the active head."""
    if session.get_bind().dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {fn}(:key)"), {"key": LOCK_KEY})
    else:
        session.execute(text("UPDATE model_version SET state = state WHERE 0 = 1"))
    return session.scalar(select(ModelVersion).where(ModelVersion.state == "active")
                          .execution_options(populate_existing=True))
