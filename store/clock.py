"""One clock for everything that compares times across hosts: leases, locks, "labels since".

On Postgres that is the database's ``now()``, shared by every web server and worker, so a host
whose clock runs ahead can neither re-claim a live review task nor take over a live retrain. On
SQLite every process is on the one host that holds the file, so its clock is the same one."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .schema import utcnow


def db_now(session: Session) -> dt.datetime:
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(select(func.now()))
    return utcnow()
