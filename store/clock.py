"""One clock for everything that compares times across hosts: leases, locks, "labels since", the
sweeper's "started long ago".

On Postgres that is the database's ``now()``, shared by every web server and worker, so a host
whose clock runs ahead can neither re-claim a live review task nor take over a live retrain. On
SQLite every process is on the one host that holds the file, so its clock is the same one.

``sql_now`` and ``sql_ago`` are that clock inside a statement (no round trip, no host clock at
all, on either database): the sweeper's stamps (``image.queued_at``) and its cutoff use them."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from .schema import utcnow

# SQLite keeps DateTime columns as 'YYYY-MM-DD HH:MM:SS.ffffff' text (UTC here): its own clock in
# that same format ('%f' is seconds with milliseconds) compares with them as text, correctly
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"


def db_now(session: Session) -> dt.datetime:
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))
    return utcnow()


def sql_now(session: Session) -> ColumnElement:
    """The database's current time as a SQL expression, to store in a DateTime column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now()
    return func.strftime(_SQLITE_FORMAT, "now")


def sql_ago(session: Session, seconds: float) -> ColumnElement:
    """The database's time ``seconds`` ago, as a SQL expression to compare a DateTime column with."""
    if session.get_bind().dialect.name == "postgresql":
        return func.now() - literal(dt.timedelta(seconds=seconds))
    return func.strftime(_SQLITE_FORMAT, "now", f"{-float(seconds)!r} seconds")


def database_time(session: Session) -> dt.datetime:
    """The database's clock read once, as a value (for statements that bind their stamps)."""
    value = session.scalar(select(sql_now(session)))
    if isinstance(value, str):  # SQLite's text
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
